package node

import (
	"context"
	"io"

	"github.com/eduspace/eduspace/node/share"
	"github.com/eduspace/eduspace/schema"
)

// Ingest validates, classifies and stores records (share.Sharer.Ingest).
func (n *Node) Ingest(ctx context.Context, r io.Reader, defaultType string) (share.IngestResult, error) {
	return n.shares.Ingest(ctx, r, defaultType)
}

// Share sends what the node holds under an agreement, as far as policy
// permits (share.Sharer.Share).
func (n *Node) Share(ctx context.Context, agreementID string) (share.Result, error) {
	return n.shares.Share(ctx, agreementID)
}

// Send streams records through policy to an agreement's recipient without
// keeping them (share.Sharer.Send).
func (n *Node) Send(ctx context.Context, agreementID string, r schema.Reader) (share.SendResult, error) {
	return n.shares.Send(ctx, agreementID, r)
}
