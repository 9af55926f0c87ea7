// Package node is the eduspace daemon: its configuration and lifecycle, the
// pipeline a record takes through it (ingest, classify, store, decide, seal,
// outbox, relay; at the peer receive, verify, open, store), the admin HTTP
// API and the node's own metrics registry.
//
// Subpackages own the parts with a life of their own: store (SQLite),
// evidence (the hash chain) and bus (NATS JetStream).
package node
