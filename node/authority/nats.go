package authority

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/nats-io/nkeys"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/bus"
)

// OperatorNATSUser is the name of the operator's nkey seed file in the
// authority's nats folder.
const OperatorNATSUser = "operator"

// NATSSeedPath is where the nkey seed of user (a node id or
// OperatorNATSUser) is kept: dir/nats/<user>.nk, mode 0600. Hand each
// member its own file; it goes in the node's nats.credentials.
func NATSSeedPath(dir, user string) string {
	return filepath.Join(dir, "nats", user+".nk")
}

// userKey reads user's nkey seed from dir, creating it on first use, and
// returns the public key.
func userKey(dir, user string) (string, error) {
	path := NATSSeedPath(dir, user)
	seed, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		kp, err := nkeys.CreateUser()
		if err != nil {
			return "", fmt.Errorf("nkey for %s: %w", user, err)
		}
		if seed, err = kp.Seed(); err != nil {
			return "", fmt.Errorf("nkey for %s: %w", user, err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return "", err
		}
		if err := crypto.WriteFileBytes(path, append(seed, '\n'), 0o600); err != nil {
			return "", fmt.Errorf("write nkey seed: %w", err)
		}
	} else if err != nil {
		return "", fmt.Errorf("read nkey seed: %w", err)
	}
	kp, err := nkeys.FromSeed(bytes.TrimSpace(seed))
	if err != nil {
		return "", fmt.Errorf("nkey seed %s: %w", path, err)
	}
	return kp.PublicKey()
}

// NATSConfig returns a stock nats-server configuration for the space's
// members and auditors (see bus.Layout.ServerConfig), creating any nkey
// seed not yet in dir/nats. Running it again keeps the existing seeds.
func NATSConfig(dir, space string, members, auditors []string, listen, storeDir string) (string, error) {
	if !bus.ValidName(space) {
		return "", fmt.Errorf("space %q: use lower case letters, digits, '-' or '_'", space)
	}
	op, err := userKey(dir, OperatorNATSUser)
	if err != nil {
		return "", err
	}
	var ms []bus.Member
	seen := map[string]bool{}
	for i, id := range append(slices.Clone(members), auditors...) {
		if !bus.ValidName(id) || id == OperatorNATSUser {
			return "", fmt.Errorf("member %q: not a valid node id", id)
		}
		if seen[id] {
			return "", fmt.Errorf("member %q named twice (a node is a member or an auditor, once)", id)
		}
		seen[id] = true
		pub, err := userKey(dir, id)
		if err != nil {
			return "", err
		}
		ms = append(ms, bus.Member{NodeID: id, NKey: pub, Auditor: i >= len(members)})
	}
	return bus.Layout{Space: space}.ServerConfig(ms, op, listen, storeDir), nil
}
