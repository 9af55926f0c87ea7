package policy

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestErasure(t *testing.T) {
	req := ErasureRequest{ID: "er-1", Provider: "uni-a", Recipient: "uni-b", Subject: "tk_0123456789abcdefABCDEF",
		Purpose: PurposeCreditTransfer, Agreement: "ag", Requested: now, Consent: "c-1"}
	if err := req.Validate(); err != nil {
		t.Fatal(err)
	}
	withReleases := req
	withReleases.ReleaseTokens = []string{"tk_0123456789abcdefABCDEG", "tk_0123456789abcdefABCDEH"}
	if err := withReleases.Validate(); err != nil {
		t.Errorf("request naming release tokens: %v", err)
	}
	if !bytes.HasPrefix(req.SigningMessage(), []byte(ErasureRequestSignatureLabel+"\x00")) {
		t.Errorf("request signing message: %q", req.SigningMessage())
	}
	rc := req.Receipt(3, now.Add(time.Minute))
	if err := rc.Validate(); err != nil || !rc.Answers(&req) {
		t.Fatalf("receipt %+v: %v, answers=%v", rc, err, rc.Answers(&req))
	}
	if !bytes.HasPrefix(rc.SigningMessage(), []byte(ErasureReceiptSignatureLabel+"\x00")) {
		t.Errorf("receipt signing message: %q", rc.SigningMessage())
	}
	for name, edit := range map[string]func(*ErasureReceipt){
		"other request":   func(r *ErasureReceipt) { r.Request = "er-2" },
		"other subject":   func(r *ErasureReceipt) { r.Subject = "tk_ffffffffffffffffffffff" },
		"other agreement": func(r *ErasureReceipt) { r.Agreement = "ag-2" },
		"other recipient": func(r *ErasureReceipt) { r.Recipient = "uni-c" },
		"before request":  func(r *ErasureReceipt) { r.Erased = now.Add(-time.Second) },
	} {
		r := rc
		edit(&r)
		if r.Answers(&req) {
			t.Errorf("%s: receipt answers the request", name)
		}
	}
	for _, tc := range []struct {
		want string
		edit func(*ErasureRequest)
	}{
		{"id", func(r *ErasureRequest) { r.ID = "" }},
		{"provider", func(r *ErasureRequest) { r.Provider = "" }},
		{"recipient", func(r *ErasureRequest) { r.Recipient = "uni-a" }},
		{"subject", func(r *ErasureRequest) { r.Subject = "2023010001" }},
		{"release_tokens", func(r *ErasureRequest) { r.ReleaseTokens = []string{"tk_0123456789abcdefABCDEG", "2023010001"} }},
		{"purpose", func(r *ErasureRequest) { r.Purpose = "x" }},
		{"agreement", func(r *ErasureRequest) { r.Agreement = "" }},
		{"requested", func(r *ErasureRequest) { r.Requested = time.Time{} }},
	} {
		r := req
		tc.edit(&r)
		if err := r.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an error naming %q", err, tc.want)
		}
	}
	for _, tc := range []struct {
		want string
		edit func(*ErasureReceipt)
	}{
		{"request", func(r *ErasureReceipt) { r.Request = "" }},
		{"provider and recipient", func(r *ErasureReceipt) { r.Recipient = r.Provider }},
		{"subject", func(r *ErasureReceipt) { r.Subject = "S1" }},
		{"agreement", func(r *ErasureReceipt) { r.Agreement = "" }},
		{"records", func(r *ErasureReceipt) { r.Records = -1 }},
		{"erased", func(r *ErasureReceipt) { r.Erased = time.Time{} }},
	} {
		r := rc
		tc.edit(&r)
		if err := r.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an error naming %q", err, tc.want)
		}
	}
}
