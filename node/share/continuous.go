package share

import (
	"context"
	"fmt"
	"sort"
)

// Continuous is one share under a continuous agreement, run after an
// ingest or at the node's start: what it sent, or why it could not.
type Continuous struct {
	Result
	Error string `json:"error,omitempty"`
}

// ShareContinuous shares, under every continuous agreement in force that
// this node provides and whose record types include one of types (all,
// when types is nil), the held records with an id of at least fromID
// ingested since the agreement came into force that no share has sent
// yet. Ingest calls it once its records are stored, from the first it
// stored, so that a share costs what the ingest brought; the node calls
// it at start with fromID 0, for records whose share a stop cut short,
// and that share decides again the records denied before. A share that
// fails is reported and does not stop the others: its records stay held
// and go with the next share under the agreement.
func (n *Sharer) ShareContinuous(ctx context.Context, types map[string]bool, fromID int64) ([]Continuous, error) {
	active, err := n.agreements.Active(ctx)
	if err != nil {
		return nil, fmt.Errorf("continuous share: %w", err)
	}
	now := n.now()
	var out []Continuous
	for _, a := range active {
		if !a.Continuous || a.Revoked || a.Provider != n.nodeID || now.Before(a.ValidFrom) || !now.Before(a.ValidUntil) || !covers(a.RecordTypes, types) {
			continue
		}
		res, err := n.share(ctx, a.ID, a.ValidFrom.UnixMilli(), max(fromID-1, 0))
		c := Continuous{Result: res}
		if c.Agreement == "" {
			c.Agreement, c.Recipient = a.ID, a.Recipient
		}
		if err != nil {
			c.Error = err.Error()
			n.log.Warn("continuous share failed; its records stay held for the next share", "agreement", a.ID, "err", err)
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Agreement < out[j].Agreement })
	return out, nil
}

// covers says whether an agreement's record types include one of types
// (nil: any).
func covers(agreed map[string][]string, types map[string]bool) bool {
	if types == nil {
		return true
	}
	for t := range agreed {
		if types[t] {
			return true
		}
	}
	return false
}
