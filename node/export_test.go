package node

// EnvelopePlaintext is how much plaintext n's envelopes hold at most.
func (n *Node) EnvelopePlaintext() int { return n.shares.EnvelopePlaintext() }
