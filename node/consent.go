package node

import (
	"context"

	"github.com/eduspace/eduspace/node/consent"
	"github.com/eduspace/eduspace/policy"
)

// GrantConsent records a consent and returns its signed receipt
// (consent.Ledger.Grant).
func (n *Node) GrantConsent(ctx context.Context, c policy.ConsentRecord) (string, error) {
	return n.consents.Grant(ctx, c)
}

// WithdrawConsent withdraws a consent and asks recipients to erase
// (consent.Ledger.Withdraw).
func (n *Node) WithdrawConsent(ctx context.Context, id string) (consent.WithdrawResult, error) {
	return n.consents.Withdraw(ctx, id)
}

// SubjectReport lists every delivery of the subject's records
// (consent.Ledger.SubjectReport).
func (n *Node) SubjectReport(ctx context.Context, subject string) (consent.SubjectReport, error) {
	return n.consents.SubjectReport(ctx, subject)
}
