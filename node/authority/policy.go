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

// SpacePolicyPath is where the authority keeps the last policy it signed
// for space: dir/policies/<space>.edsp.
func SpacePolicyPath(dir, space string) string {
	return filepath.Join(dir, "policies", space+".edsp")
}

// SetSpacePolicy signs space's policy with minSuite as the weakest suite
// allowed, under the serial after the last one kept in dir, and keeps it
// there. It returns the signed policy.
//
// The linkage evaluator of the last policy, if any, is kept.
func SetSpacePolicy(k *crypto.AuthorityKey, dir, space string, minSuite crypto.SuiteID, now time.Time) (*crypto.SpacePolicy, []byte, error) {
	return nextSpacePolicy(k, dir, space, now, func(p *crypto.SpacePolicy) { p.MinSuite = minSuite })
}

// SetLinkageEvaluator signs space's policy naming ev as its linkage
// evaluator (nil: none), under the serial after the last one kept in dir,
// and keeps it there; the minimum suite of the last policy is kept, and a
// first policy takes minSuite. It returns the signed policy.
func SetLinkageEvaluator(k *crypto.AuthorityKey, dir, space string, ev *crypto.LinkageEvaluator, minSuite crypto.SuiteID, now time.Time) (*crypto.SpacePolicy, []byte, error) {
	return nextSpacePolicy(k, dir, space, now, func(p *crypto.SpacePolicy) {
		if p.Serial == 1 {
			p.MinSuite = minSuite
		}
		p.Linkage = ev
	})
}

// nextSpacePolicy signs the policy after the last one kept in dir for
// space, as edit makes it from the last one's fields.
func nextSpacePolicy(k *crypto.AuthorityKey, dir, space string, now time.Time, edit func(*crypto.SpacePolicy)) (*crypto.SpacePolicy, []byte, error) {
	serial := uint64(1)
	var kept *crypto.SpacePolicy
	path := SpacePolicyPath(dir, space)
	switch data, err := os.ReadFile(path); {
	case err == nil:
		last, err := crypto.ParseSpacePolicy(data, k.Public(), space)
		if err != nil {
			return nil, nil, fmt.Errorf("space policy %s: %w", path, err)
		}
		serial, kept = last.Serial+1, last
	case !errors.Is(err, fs.ErrNotExist):
		return nil, nil, fmt.Errorf("read space policy: %w", err)
	}
	p := crypto.SpacePolicy{Space: space, Serial: serial, Issued: now}
	if kept != nil {
		p.MinSuite, p.Linkage = kept.MinSuite, kept.Linkage
	}
	edit(&p)
	data, err := k.SignSpacePolicy(p)
	if err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, nil, fmt.Errorf("keep space policy: %w", err)
	}
	if err := crypto.WriteFileBytes(path, data, 0o644); err != nil {
		return nil, nil, fmt.Errorf("keep space policy: %w", err)
	}
	return &p, data, nil
}

// PublishSpacePolicy puts a signed space policy in the space's revocation
// bucket under bus.PolicyKey, where nodes read it when they start.
func PublishSpacePolicy(ctx context.Context, js jetstream.JetStream, space string, data []byte) error {
	kv, err := bus.Revocations(ctx, js, bus.Layout{Space: space})
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, bus.PolicyKey, data); err != nil {
		return fmt.Errorf("publish space policy: %w", err)
	}
	return nil
}
