package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
)

// datasetCommands are the subcommands of `eduspace dataset`, each in its
// own file (release.go registers release).
var datasetCommands = map[string]func([]string) error{}

// runDataset dispatches `eduspace dataset SUB`.
func runDataset(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	names := make([]string, 0, len(datasetCommands))
	for n := range datasetCommands {
		names = append(names, n)
	}
	slices.Sort(names)
	if len(args) == 0 || datasetCommands[args[0]] == nil {
		return fmt.Errorf("%w: eduspace dataset %s [flags]", errUsage, strings.Join(names, "|"))
	}
	datasetIO.ctx, datasetIO.stdout, datasetIO.stderr = ctx, stdout, stderr
	return datasetCommands[args[0]](args[1:])
}
