package recovery

import (
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/eduspace/eduspace/node/consent"
	"github.com/eduspace/eduspace/node/store"
	"github.com/eduspace/eduspace/policy"
)

// TestRelearnOnlyOwnErasures: of the erasure requests a peer's answer
// holds, only one this node could have made to that peer (its own, to that
// recipient, under an agreement with it, naming the subject's token there,
// for a consent that covers it) notes its consent to withdraw again; the
// rest are counted and ignored.
func TestRelearnOnlyOwnErasures(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "node.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// The ledger as the node holds it: c-1 active (token tok-1 at uni-b),
	// c-2 withdrawn already, c-3 active but its subject's token is tok-3.
	ledger := map[string]consent.Relearnt{}
	tokens := map[string]string{"c-1": "tok-1", "c-2": "tok-2", "c-3": "tok-3"}
	ledger["c-1"] = consent.Relearnt{Held: true}
	ledger["c-2"] = consent.Relearnt{Held: true, Withdrawn: true}
	ledger["c-3"] = consent.Relearnt{Held: true}
	s := New(Deps{NodeID: "uni-a", DB: db, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Relearn: func(_ context.Context, id, recipient, token string) (consent.Relearnt, error) {
			r, ok := ledger[id]
			if !ok {
				return consent.Relearnt{}, nil
			}
			r.Matches = recipient == "uni-b" && token == tokens[id]
			return r, nil
		}})
	req := func(mod func(*policy.ErasureRequest)) []byte {
		r := policy.ErasureRequest{ID: "er-1", Provider: "uni-a", Recipient: "uni-b", Subject: "tok-1", Purpose: policy.PurposeResearch,
			Agreement: "study", Consent: "c-1"}
		if mod != nil {
			mod(&r)
		}
		b, _ := json.Marshal(r)
		return b
	}
	erasures := [][]byte{
		req(nil), // ours: noted
		req(func(r *policy.ErasureRequest) { r.Consent, r.Subject = "c-2", "tok-2" }), // withdrawn already: nothing
		req(func(r *policy.ErasureRequest) { r.Consent = "c-9" }),                     // a consent the copy lacks
		req(func(r *policy.ErasureRequest) { r.Consent, r.Subject = "c-3", "tok-1" }), // another subject's token
		req(func(r *policy.ErasureRequest) { r.Provider = "uni-c" }),                  // another provider's
		req(func(r *policy.ErasureRequest) { r.Recipient = "uni-d" }),                 // to another recipient
		req(func(r *policy.ErasureRequest) { r.Agreement = "other" }),                 // under no agreement with uni-b
		req(func(r *policy.ErasureRequest) { r.Consent = "" }),                        // naming no consent
		[]byte(`not json`),
	}
	var u Unrecoverable
	if err := db.Write(ctx, func(tx *sql.Tx) error {
		return s.relearn(ctx, tx, "uni-b", []string{"study"}, erasures, &u)
	}); err != nil {
		t.Fatal(err)
	}
	noted, err := store.Strings(ctx, db.R, `SELECT consent FROM recovery_withdrawals ORDER BY consent`)
	if err != nil {
		t.Fatal(err)
	}
	if len(noted) != 1 || noted[0] != "c-1" {
		t.Errorf("consents noted to withdraw again: %v; want only c-1", noted)
	}
	if u.UnknownConsents != 1 || u.ForeignErasures != 6 {
		t.Errorf("counted %d unknown consents, %d foreign erasures; want 1 and 6", u.UnknownConsents, u.ForeignErasures)
	}
}
