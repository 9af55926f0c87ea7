package node

import (
	"context"

	"github.com/eduspace/eduspace/node/agreement"
	"github.com/eduspace/eduspace/policy"
)

// AddAgreement installs an agreement this node is a party to without the
// signed exchange (agreement.Book.Add).
func (n *Node) AddAgreement(ctx context.Context, a *policy.Agreement) error {
	return n.agreements.Add(ctx, a)
}

// Agreements lists the agreements this node holds.
func (n *Node) Agreements(ctx context.Context) ([]agreement.Info, error) {
	return n.agreements.List(ctx)
}

// ProposeAgreement signs a and sends it to the other party.
func (n *Node) ProposeAgreement(ctx context.Context, a *policy.Agreement) error {
	return n.agreements.Propose(ctx, a)
}

// AcceptAgreement signs an agreement the peer proposed.
func (n *Node) AcceptAgreement(ctx context.Context, id string) error {
	return n.agreements.Accept(ctx, id)
}

// RevokeAgreement revokes an agreement from this side.
func (n *Node) RevokeAgreement(ctx context.Context, id string) (dropped int, err error) {
	return n.agreements.Revoke(ctx, id)
}
