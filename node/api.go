package node

import (
	"context"
	"io"

	"github.com/eduspace/eduspace/node/admin"
	"github.com/eduspace/eduspace/node/aggregate"
	"github.com/eduspace/eduspace/node/agreement"
	"github.com/eduspace/eduspace/node/consent"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/node/receive"
	"github.com/eduspace/eduspace/node/recovery"
	"github.com/eduspace/eduspace/node/release"
	"github.com/eduspace/eduspace/node/share"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
)

// The node's Go API, for the commands, the demo, the benchmark and tests:
// each method hands the call to the part that owns it.

// ID is the node's id.
func (n *Node) ID() string { return n.cfg.NodeID }

// AdminToken is the bearer token of the admin API.
func (n *Node) AdminToken() string { return n.admin.Token() }

// AdminAddr is the address the admin API listens on ("" when disabled); it
// resolves a configured port 0 to the port chosen.
func (n *Node) AdminAddr() string { return n.admin.Addr() }

// Status reports the node's state (admin.Server.Status).
func (n *Node) Status(ctx context.Context) (admin.Status, error) { return n.admin.Status(ctx) }

// VerifyEvidence checks the node's whole evidence chain.
func (n *Node) VerifyEvidence(ctx context.Context) (evidence.Head, error) {
	return evidence.Verify(ctx, n.db.R)
}

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

// Ingest validates, classifies and stores records (share.Sharer.Ingest).
func (n *Node) Ingest(ctx context.Context, r io.Reader, defaultType string) (share.IngestResult, error) {
	return n.shares.Ingest(ctx, r, share.IngestOptions{Type: defaultType})
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

// ReceivedRecords is how many records this node has stored from peers
// since it started, less those erased or expired since.
func (n *Node) ReceivedRecords() int64 { return n.recv.ReceivedRecords() }

// ExportReceived writes the records received under an agreement to w,
// with its evidence entry (receive.Receiver.Export).
func (n *Node) ExportReceived(ctx context.Context, o receive.ExportOptions, w io.Writer) (receive.ExportResult, error) {
	return n.recv.Export(ctx, o, w)
}

// ExpireRetention deletes received records whose agreement's retention
// period has ended, without being asked: one pass (the node runs one at
// start and every ten minutes).
func (n *Node) ExpireRetention(ctx context.Context) error { return n.recv.ExpireRetention(ctx) }

// Aggregator is the node's side of aggregate rounds: the center's queries
// and releases, and the node's privacy budgets.
func (n *Node) Aggregator() *aggregate.Aggregator { return n.agg }

// Checkpoint signs and publishes a checkpoint of the evidence log now, if
// the log has grown since the last one.
func (n *Node) Checkpoint(ctx context.Context) error { return n.ckpt.Publish(ctx) }

// CheckpointHeld is the highest entry count of node's evidence log that a
// checkpoint this node holds covers (0 when none).
func (n *Node) CheckpointHeld(ctx context.Context, node string) (int64, error) {
	count, _, err := n.ckpt.Latest(ctx, node)
	return count, err
}

// RevocationSerial is the serial of the newest revocation list this node
// has verified and checks peers against, 0 when it holds none.
func (n *Node) RevocationSerial() uint64 { return n.reg.RevocationSerial() }

// Recover brings the node, restored from an older copy of its database,
// back in step with the space (node/recovery; `eduspace node recover`).
func (n *Node) Recover(ctx context.Context, opt recovery.Options) (recovery.Report, error) {
	return n.recovery.Recover(ctx, opt)
}

// RotateDataKey makes a new data key current and re-seals what is stored
// under the old one in the background (node/keys/KEYS.md §1).
func (n *Node) RotateDataKey(ctx context.Context) (keys.DataKeyState, error) {
	return n.dataKeys.Rotate(ctx)
}

// DataKeyState reports the data key and the progress of its rotation.
func (n *Node) DataKeyState(ctx context.Context) (keys.DataKeyState, error) {
	return n.dataKeys.State(ctx)
}

// Release makes a dataset release under an agreement, or refuses it
// (*release.Refusal) before any data is produced (release.Releaser.Make).
func (n *Node) Release(ctx context.Context, req release.Request) (*release.Release, error) {
	return n.releases.Make(ctx, req, nil)
}

// Releases is the node's releases: those it made, and the releases that
// included one subject (release.Releaser).
func (n *Node) Releases() *release.Releaser { return n.releases }

// SubjectReleases lists the releases that included the subject (the
// subject key value, e.g. a student_id).
func (n *Node) SubjectReleases(ctx context.Context, subject string) ([]release.Inclusion, error) {
	return n.releases.ForSubjectID(ctx, subject)
}

// DeclareProvenance records, on an ai_service node, that releases it
// received fed a model version, and tells their providers
// (release.Releaser.Declare).
func (n *Node) DeclareProvenance(ctx context.Context, req release.DeclareRequest) (release.Declaration, error) {
	return n.releases.Declare(ctx, req)
}
