// Package node is the eduspace daemon's wiring: its configuration (Config,
// LoadConfig, Validate), Open, which builds the parts below from the bottom
// of a record's way up and starts their loops, and Close, which stops them
// in reverse. It owns no table and decides nothing about a record: every
// step is a package of its own, and the Go API on Node hands each call to
// the part that owns it.
//
// A record's way, one package per step, data and calls flowing one way
// (test.TestNodeLayers holds the layers):
//
//   - share: ingest validates and classifies a record once and holds it
//     (records); a share decides it under an agreement (policy, consent,
//     yearly volume), writes what may leave as policy.AppendRecord says, and
//     seals envelopes into the outbox with the evidence of every decision.
//   - consent: the consent ledger a decision reads, and the erasures a
//     withdrawal asks of recipients.
//   - agreement: the agreements a node is a party to and their signed
//     exchange.
//   - outbox: what leaves, numbered per peer; the relay publishes it to
//     JetStream in order and records the recipients' receipts.
//   - checkpoint: signed checkpoints of the evidence log, published and
//     received; the node fails closed when its own go stale.
//   - envelope: sealing, and every check of what arrives, with the closed
//     set of refusal reasons.
//   - keys, registry, evidence, metrics: the node's keys, the space's
//     members and revocations, the hash-chained evidence log, the
//     instruments.
//   - store, bus: SQLite and NATS JetStream.
//
// At the peer: receive checks each delivery against the agreement it holds
// itself, opens it, stores it (inbox, received), confirms it to the sender,
// and carries out erasure requests and retention. Above share, aggregate
// runs the secure-aggregation rounds of the center and the universities,
// release makes de-identified or differentially private dataset releases
// for an agreement's recipient (sent through share) and keeps the
// training-provenance declarations of AI services, recovery brings a node restored from an older copy of its database back
// in step with its peers (and answers for this node when a peer recovers),
// catalogue keeps the datasets the node offers and those the members
// offer, publishes its own to the space and serves them at the Dataspace
// Protocol endpoint (dsp.listen), and admin serves the HTTP API, the
// health probes, the status page and the metrics.
package node
