package node

import "time"

// WithReceiptLinger is env with receipts lingering d rather than
// receiptLinger.
func WithReceiptLinger(env Env, d time.Duration) Env {
	env.receiptLinger = d
	return env
}

// EnvelopePlaintext is how much plaintext n's envelopes hold at most.
func (n *Node) EnvelopePlaintext() int { return n.shares.EnvelopePlaintext() }
