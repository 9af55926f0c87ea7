package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/eduspace/eduspace/crypto"
)

// runInspect prints an envelope's header without opening it: for an
// operator or auditor looking at a message taken off the wire or out of
// an outbox. The signature is not checked (that needs the sender's
// credential); the output says so.
func runInspect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("inspect", stderr)
	if err := parse(fs, args, true); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%w: eduspace inspect FILE (an envelope, raw or base64)", errUsage)
	}
	data, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	env, err := crypto.ParseEnvelope(data)
	if err != nil {
		// Perhaps base64, as envelopes are pasted into tickets.
		if raw, derr := base64.StdEncoding.DecodeString(string(bytes.Join(bytes.Fields(data), nil))); derr == nil {
			env, err = crypto.ParseEnvelope(raw)
		}
	}
	if err != nil {
		return err
	}
	h := env.Header
	out := map[string]any{
		"envelope": h.IDString(), "suite": h.Suite.String(), "kind": h.Kind,
		"sender": h.Sender, "sender_key": h.SenderKeyID, "recipient": h.Recipient, "recipient_key": h.RecipientKeyID,
		"seq": h.Seq, "created": h.Created.UTC().Format(time.RFC3339Nano), "expires": h.Expires.UTC().Format(time.RFC3339Nano),
		"agreement": h.Agreement, "purpose": h.Purpose, "record_type": h.RecordType, "count": h.Count, "level": h.Level,
		"size": env.Size(), "signature_verified": false,
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
