package receive

import "time"

// WithReceiptLinger is Options with stored envelopes waiting d, rather
// than receiptLinger, for others to share their receipt.
func WithReceiptLinger(d time.Duration) Options {
	return Options{receiptLinger: d}
}

// QForgetRecovered is forgetRecovered's query, for the test of its plan.
const QForgetRecovered = qForgetRecovered
