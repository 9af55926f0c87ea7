package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
)

func runNode(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: node run --config FILE | node init --config FILE", errUsage)
	}
	switch args[0] {
	case "run":
		return runNodeRun(ctx, args[1:], stdout, stderr)
	case "init":
		return runNodeInit(ctx, args[1:], stdout, stderr)
	}
	return fmt.Errorf("%w: unknown node subcommand %q", errUsage, args[0])
}

// runNodeRun runs the daemon until SIGINT or SIGTERM, then shuts down
// cleanly.
func runNodeRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("node run", stderr)
	cfgPath := fs.String("config", "", "the node's YAML config file (required)")
	if err := parse(fs, args, false); err != nil {
		return err
	}
	if *cfgPath == "" {
		return fmt.Errorf("%w: --config is required", errUsage)
	}
	cfg, err := node.LoadConfig(*cfgPath)
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.LogLevel)
	n, err := node.Open(ctx, cfg, node.Env{Logger: log})
	if err != nil {
		return err
	}
	<-ctx.Done()
	log.Info("shutting down")
	return n.Close()
}

// runNodeInit creates a node's keys in its data directory and writes the
// request file the authority issues the credential from.
func runNodeInit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("node init", stderr)
	cfgPath := fs.String("config", "", "the node's YAML config file (required)")
	if err := parse(fs, args, false); err != nil {
		return err
	}
	if *cfgPath == "" {
		return fmt.Errorf("%w: --config is required", errUsage)
	}
	cfg, err := node.LoadConfig(*cfgPath)
	if err != nil {
		return err
	}
	suite, err := crypto.ParseSuite(cfg.Suite)
	if err != nil {
		return err
	}
	if _, err := node.InitKeys(cfg.DataDir, cfg.NodeID, suite); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "keys written to %s\nhand %s to the space authority:\n  eduspace authority issue --dir AUTHORITY_DIR --request %s --space %s --role university --institution NAME --out credential.jwt\nthen put credential.jwt in %s\n",
		filepath.Join(cfg.DataDir, "keys"), filepath.Join(cfg.DataDir, node.RequestFile),
		filepath.Join(cfg.DataDir, node.RequestFile), cfg.Space, cfg.DataDir)
	return nil
}
