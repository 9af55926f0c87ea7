package evidence

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"iter"
	"slices"
)

// Row is one stored link of a chain, as in the evidence table.
type Row struct {
	Seq      int64
	Entry    []byte // the canonical entry
	PrevHash []byte
	Hash     []byte
	// Kind is the database's copy of the entry's kind (the evidence.kind
	// column About finds entries by, outside the hashes), nil where the
	// source has none: verification checks that it agrees with the entry,
	// so that an edited column cannot hide an entry from About.
	Kind *string
}

// Rows is a chain source: its rows in seq order. A non-nil error ends the
// sequence; it is a failure to read, not a finding about the chain.
type Rows = iter.Seq2[Row, error]

// DBRows reads the chain from a node database's evidence table.
func DBRows(ctx context.Context, db *sql.DB) Rows { return queryRows(ctx, db) }

func queryRows(ctx context.Context, db queryer) Rows {
	return func(yield func(Row, error) bool) {
		// A database from before the kind column (an older copy under
		// audit) has none to check.
		kind := `NULL`
		if has, err := hasKindColumn(ctx, db); err != nil {
			yield(Row{}, fmt.Errorf("read evidence: %w", err))
			return
		} else if has {
			kind = `kind`
		}
		rows, err := db.QueryContext(ctx, `SELECT seq, entry, prev_hash, hash, `+kind+` FROM evidence ORDER BY seq`)
		if err != nil {
			yield(Row{}, fmt.Errorf("read evidence: %w", err))
			return
		}
		defer rows.Close()
		for rows.Next() {
			var r Row
			var k sql.NullString
			if err := rows.Scan(&r.Seq, &r.Entry, &r.PrevHash, &r.Hash, &k); err != nil {
				yield(Row{}, fmt.Errorf("read evidence: %w", err))
				return
			}
			if kind != `NULL` {
				r.Kind = &k.String // NULL reads as "", which no entry's kind is
			}
			if !yield(r, nil) {
				return
			}
		}
		if err := rows.Err(); err != nil {
			yield(Row{}, fmt.Errorf("read evidence: %w", err))
		}
	}
}

// hasKindColumn says whether db's evidence table has the kind column.
func hasKindColumn(ctx context.Context, db queryer) (bool, error) {
	rows, err := db.QueryContext(ctx, `SELECT 1 FROM pragma_table_info('evidence') WHERE name = 'kind'`)
	if err != nil {
		return false, err
	}
	defer rows.Close()
	has := rows.Next()
	return has, rows.Err()
}

// FirstNode returns the node named by the first entry of rows, or "" when
// there are none or the first entry is not well-formed. It reads no
// further than the first row and verifies nothing.
func FirstNode(rows Rows) (string, error) {
	for r, err := range rows {
		if err != nil {
			return "", err
		}
		var e Entry
		if json.Unmarshal(r.Entry, &e) != nil {
			return "", nil
		}
		return e.Node, nil
	}
	return "", nil
}

// Checkpoint is what a checkpoint commits to: after Count entries the chain's
// head hash was Head. Authenticating it is the caller's business (see
// [Signed.Authenticate]).
type Checkpoint struct {
	Count int64
	Head  []byte
}

// VerifyCheckpoints walks the chain in rows and checks every link as
// [Verify] does, that every entry names the node the first one names, and
// every checkpoint in cps: the chain must have at least Count entries and
// the hash after entry Count must equal Head.
//
// A broken chain returns a *BrokenError naming the first bad entry. For a
// broken link that is the entry itself. For a checkpoint that does not
// match, or one beyond the end of the chain, it is the entry after the last
// checkpoint that still matched (or entry 1): every entry after that one
// may have been rewritten, so a log whose first entries were deleted and
// the rest re-chained and renumbered is caught at entry 1, and a log whose
// tail was cut is caught when a checkpoint covers the tail. Checkpoints
// with the same Count must agree.
//
// Entries lost in a restore from an older copy are a gap in the numbers,
// followed by a recovery entry (KindRecover) that declares it and is
// chained to the head after the gap. When checkpoints are given, a
// checkpoint at the gap's end must vouch for that head; the checkpoints of
// the lost entries are skipped. Head.Gaps lists the gaps.
func VerifyCheckpoints(rows Rows, cps []Checkpoint) (Head, error) {
	cps = slices.Clone(cps)
	slices.SortStableFunc(cps, func(a, b Checkpoint) int { return cmp.Compare(a.Count, b.Count) })
	for _, c := range cps {
		if c.Count < 0 {
			return Head{}, fmt.Errorf("checkpoint with negative count %d", c.Count)
		}
	}
	prev := make([]byte, sha256.Size)
	var alg chainAlg
	var n, good int64 // entries walked; the last count a checkpoint confirmed
	var node string
	// check compares the checkpoints at count n with the hash after entry n.
	check := func() error {
		for len(cps) > 0 && cps[0].Count == n {
			if !bytes.Equal(cps[0].Head, prev) {
				return &BrokenError{Seq: good + 1, Reason: fmt.Sprintf(
					"a checkpoint says the head after entry %d was %s, the chain has %s", n, short(cps[0].Head), short(prev))}
			}
			cps = cps[1:]
			good = n
		}
		return nil
	}
	if err := check(); err != nil {
		return Head{}, err
	}
	vouch := cps != nil // a gap needs a checkpoint at its end
	var gaps []Gap
	for r, err := range rows {
		if err != nil {
			return Head{}, err
		}
		n++
		if r.Seq > n {
			// Entries lost in a restore: only a recovery entry may follow
			// them, chained to the space's checkpoint at the gap's end.
			g, ok := recoveryGap(r)
			if !ok || g.From != n || g.To != r.Seq-1 {
				return Head{}, &BrokenError{Seq: n, Reason: fmt.Sprintf("entry %d missing (next stored is %d)", n, r.Seq)}
			}
			for len(cps) > 0 && cps[0].Count < g.To {
				cps = cps[1:] // checkpoints of the lost entries: nothing to check them against
			}
			if vouch {
				if len(cps) == 0 || cps[0].Count != g.To || !bytes.Equal(cps[0].Head, r.PrevHash) {
					return Head{}, &BrokenError{Seq: r.Seq, Reason: fmt.Sprintf(
						"entries %d to %d are declared lost in a restore, and no checkpoint at %d vouches for the head the log goes on from", g.From, g.To, g.To)}
				}
				cps = cps[1:]
			}
			gaps = append(gaps, g)
			n, prev, good = r.Seq, r.PrevHash, g.To
		}
		if r.Seq != n {
			return Head{}, &BrokenError{Seq: n, Reason: fmt.Sprintf("entry %d missing (next stored is %d)", n, r.Seq)}
		}
		if n == 1 {
			// Entry 1's previous hash is the chain's genesis: zero for
			// SHA-256, sm3Genesis for SM3.
			if alg = genesisAlg(r.PrevHash); alg == 0 {
				return Head{}, &BrokenError{Seq: 1, Reason: "previous hash starts neither a SHA-256 chain (zero) nor an SM3 chain"}
			}
			prev = r.PrevHash
		}
		if !bytes.Equal(r.PrevHash, prev) {
			return Head{}, &BrokenError{Seq: n, Reason: "previous hash does not match the chain"}
		}
		if !bytes.Equal(r.Hash, chain(alg, prev, r.Entry)) {
			return Head{}, &BrokenError{Seq: n, Reason: "entry does not match its hash"}
		}
		var e Entry
		if err := json.Unmarshal(r.Entry, &e); err != nil || e.Seq != n {
			return Head{}, &BrokenError{Seq: n, Reason: "entry is not a well-formed record of its position"}
		}
		if r.Kind != nil && *r.Kind != e.Kind {
			return Head{}, &BrokenError{Seq: n, Reason: fmt.Sprintf("the kind column says %q, the entry %q", *r.Kind, e.Kind)}
		}
		if n == 1 {
			node = e.Node
		} else if e.Node != node {
			return Head{}, &BrokenError{Seq: n, Reason: fmt.Sprintf("entry names node %q, the log is %q's", e.Node, node)}
		}
		prev = r.Hash
		if err := check(); err != nil {
			return Head{}, err
		}
	}
	if len(cps) > 0 {
		last := cps[len(cps)-1].Count
		return Head{}, &BrokenError{Seq: good + 1, Reason: fmt.Sprintf(
			"the chain has %d entries, a checkpoint covers %d", n, last)}
	}
	h := Head{Count: n, Hash: prev, Node: node, Gaps: gaps}
	if alg != 0 {
		h.Algorithm = alg.String()
	}
	return h, nil
}

// Gap is a run of entries lost when a node's database was restored from
// an older copy, declared by the recovery entry after it
// (Log.AppendRecovery).
type Gap struct {
	From, To int64
}

// recoveryGap reads the gap a recovery entry declares.
func recoveryGap(r Row) (Gap, bool) {
	var e Entry
	if json.Unmarshal(r.Entry, &e) != nil || e.Kind != KindRecover || e.Seq != r.Seq {
		return Gap{}, false
	}
	g := Gap{From: int64(e.Detail["lost_from"]), To: int64(e.Detail["lost_to"])}
	return g, g.From >= 1 && g.To >= g.From
}

// short abbreviates a hash for messages.
func short(h []byte) string {
	s := hex.EncodeToString(h)
	if len(s) > 16 {
		return s[:16] + "…"
	}
	if s == "" {
		return "(none)"
	}
	return s
}
