package authority

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/bus"
)

// RevocationListPath is where the authority keeps the last revocation list
// it signed for space: dir/revocations/<space>.edrl. Every new list carries
// its entries forward and takes the next serial.
func RevocationListPath(dir, space string) string {
	return filepath.Join(dir, "revocations", space+".edrl")
}

// RevocationList reads the last list signed for space, verifying it with
// the root key; nil when none has been signed yet.
func RevocationList(dir, space string) (*crypto.RevocationList, []byte, error) {
	pub, err := crypto.ReadAuthorityPublicKey(filepath.Join(dir, PublicKeyFile))
	if err != nil {
		return nil, nil, err
	}
	path := RevocationListPath(dir, space)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read revocation list: %w", err)
	}
	rl, err := crypto.ParseRevocationList(data, pub, space)
	if err != nil {
		return nil, nil, fmt.Errorf("revocation list %s: %w", path, err)
	}
	return rl, data, nil
}

// Revoke adds r to space's revocation list, signs the list with the next
// serial and keeps it in dir. It returns the signed list. A node or key
// already revoked from an earlier time is refused as a no-op.
func Revoke(k *crypto.AuthorityKey, dir, space string, r crypto.Revocation, now time.Time) (*crypto.RevocationList, []byte, error) {
	old, _, err := RevocationList(dir, space)
	if err != nil {
		return nil, nil, err
	}
	rl := crypto.RevocationList{Space: space, Serial: 1, Issued: now}
	if old != nil {
		if old.Revoked(r.NodeID, r.KeyID, r.Revoked) {
			return nil, nil, fmt.Errorf("revoke: %s is already revoked by list %d", describe(r), old.Serial)
		}
		rl.Serial = old.Serial + 1
		rl.Entries = append(rl.Entries, old.Entries...)
	}
	rl.Entries = append(rl.Entries, r)
	data, err := k.SignRevocations(rl)
	if err != nil {
		return nil, nil, err
	}
	signed, err := crypto.ParseRevocationList(data, k.Public(), space)
	if err != nil {
		return nil, nil, fmt.Errorf("revoke: %w", err)
	}
	path := RevocationListPath(dir, space)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, nil, fmt.Errorf("revoke: %w", err)
	}
	if err := crypto.WriteFileBytes(path, data, 0o644); err != nil {
		return nil, nil, fmt.Errorf("revoke: keep list: %w", err)
	}
	return signed, data, nil
}

func describe(r crypto.Revocation) string {
	if r.KeyID == "" {
		return "node " + r.NodeID
	}
	return "key " + r.KeyID + " of node " + r.NodeID
}

// PublishRevocations puts a signed revocation list in the space's
// revocation bucket, where nodes watch for it. Nodes take it only if it
// verifies and its serial is larger than the one they hold.
func PublishRevocations(ctx context.Context, js jetstream.JetStream, space string, data []byte) error {
	kv, err := bus.Revocations(ctx, js, bus.Layout{Space: space})
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, bus.RevocationKey, data); err != nil {
		return fmt.Errorf("publish revocation list: %w", err)
	}
	return nil
}
