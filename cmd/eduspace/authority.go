package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/authority"
)

func runAuthority(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: authority init --dir D | authority issue --dir D --request FILE ...", errUsage)
	}
	switch args[0] {
	case "init":
		fs := newFlags("authority init", stderr)
		dir := fs.String("dir", "", "directory for the root key pair (required)")
		if err := parse(fs, args[1:], false); err != nil {
			return err
		}
		if *dir == "" {
			return fmt.Errorf("%w: --dir is required", errUsage)
		}
		pub, err := authority.Init(*dir)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "root key %s written; give %s to every node (authority_public_key)\n",
			pub.KeyID(), filepath.Join(*dir, authority.PublicKeyFile))
		return nil
	case "issue":
		fs := newFlags("authority issue", stderr)
		dir := fs.String("dir", "", "the authority directory (required)")
		req := fs.String("request", "", "the node's node-request.json (required)")
		space := fs.String("space", "", "the space name (required)")
		role := fs.String("role", "university", "member role: university, center or auditor")
		inst := fs.String("institution", "", "the member institution's name (required)")
		valid := fs.Duration("valid", 365*24*time.Hour, "how long the credential is valid")
		out := fs.String("out", "", "file to write the credential (JWT) to (required)")
		if err := parse(fs, args[1:], false); err != nil {
			return err
		}
		for name, v := range map[string]string{"--dir": *dir, "--request": *req, "--space": *space, "--institution": *inst, "--out": *out} {
			if v == "" {
				return fmt.Errorf("%w: %s is required", errUsage, name)
			}
		}
		if !crypto.Role(*role).Valid() {
			return fmt.Errorf("%w: --role %q: use university, center or auditor", errUsage, *role)
		}
		k, err := authority.Load(*dir)
		if err != nil {
			return err
		}
		tok, err := authority.Issue(k, *req, authority.Member{Space: *space, Institution: *inst,
			Role: crypto.Role(*role), Valid: *valid}, time.Now())
		if err != nil {
			return err
		}
		if err := os.WriteFile(*out, []byte(tok+"\n"), 0o644); err != nil {
			return fmt.Errorf("write credential: %w", err)
		}
		fmt.Fprintf(stdout, "credential written to %s\n", *out)
		return nil
	}
	return fmt.Errorf("%w: unknown authority subcommand %q", errUsage, args[0])
}
