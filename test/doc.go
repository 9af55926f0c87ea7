// Package test holds eduspace's cross-package suites: end-to-end exchanges
// between nodes over a real embedded NATS server and real SQLite databases,
// and the guardrails that keep the code's shape (package docs, import
// direction).
package test
