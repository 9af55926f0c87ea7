package linkage

import (
	"context"
	"fmt"
	"time"
)

// Status is what a node knows of the space's linkage: the evaluator and
// key the space policy names and, on the evaluator, each member's usage.
type Status struct {
	Evaluator string `json:"evaluator,omitempty"` // "" when the space policy names none
	Suite     string `json:"suite,omitempty"`
	KeyID     string `json:"key_id,omitempty"`
	// IsEvaluator is whether this node is the evaluator; KeyHeld whether
	// it holds the private key the policy names (on the evaluator).
	IsEvaluator bool `json:"is_evaluator"`
	KeyHeld     bool `json:"key_held,omitempty"`
	// Problem says what keeps linkage from working here, if anything.
	Problem string  `json:"problem,omitempty"`
	Limits  *Limits `json:"limits,omitempty"` // on the evaluator
	Usage   []Usage `json:"usage,omitempty"`  // on the evaluator
}

// Usage is one member's evaluations for one purpose and epoch, at the
// evaluator.
type Usage struct {
	Member      string    `json:"member"`
	Purpose     string    `json:"purpose"`
	Epoch       string    `json:"epoch"`
	Evaluations int64     `json:"evaluations"`
	Refused     int64     `json:"refused"`
	Last        time.Time `json:"last"`
}

// Status reports the space's linkage as this node sees it.
func (s *Service) Status(ctx context.Context) (Status, error) {
	var st Status
	p := s.d.Registry.Policy()
	if p == nil || p.Linkage == nil {
		st.Problem = "the space policy names no linkage evaluator"
		return st, nil
	}
	st.Evaluator, st.Suite, st.KeyID = p.Linkage.Node, p.Linkage.Suite, KeyID(p.Linkage.Suite, p.Linkage.Key)
	st.IsEvaluator = p.Linkage.Node == s.d.NodeID
	if _, _, err := s.evaluator(ctx); err != nil {
		st.Problem = err.Error()
	}
	if !st.IsEvaluator {
		return st, nil
	}
	lim := s.d.Limits
	st.Limits = &lim
	if _, err := s.key(st.KeyID); err != nil {
		st.Problem = err.Error()
	} else {
		st.KeyHeld = true
	}
	rows, err := s.d.DB.R.QueryContext(ctx, `SELECT member, purpose, epoch, evaluations, refused, last_ms FROM linkage_usage ORDER BY member, purpose, epoch`)
	if err != nil {
		return st, fmt.Errorf("read linkage usage: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var u Usage
		var ms int64
		if err := rows.Scan(&u.Member, &u.Purpose, &u.Epoch, &u.Evaluations, &u.Refused, &ms); err != nil {
			return st, fmt.Errorf("read linkage usage: %w", err)
		}
		u.Last = time.UnixMilli(ms).UTC()
		st.Usage = append(st.Usage, u)
	}
	return st, rows.Err()
}
