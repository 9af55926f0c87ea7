package test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto/timestamp"
	"github.com/eduspace/eduspace/crypto/timestamp/tsatest"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/admin"
	"github.com/eduspace/eduspace/node/checkpoint"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/node/store"
)

// readOverview reads n's GET /v1/overview.
func readOverview(t *testing.T, n *node.Node) admin.Overview {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+n.AdminAddr()+"/v1/overview", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+n.AdminToken())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var o admin.Overview
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/overview: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&o); err != nil {
		t.Fatal(err)
	}
	return o
}

// ingestAndCheckpoint stores one record, which writes evidence, and
// publishes a checkpoint of it.
func ingestAndCheckpoint(t *testing.T, n *node.Node, id string) {
	t.Helper()
	ctx := context.Background()
	rec := `{"type":"course_grade","student_id":"` + id + `","course_code":"CS101","score":90}` + "\n"
	if res, err := n.Ingest(ctx, strings.NewReader(rec), ""); err != nil || res.Stored != 1 {
		t.Fatalf("ingest: %+v, %v", res, err)
	}
	if err := n.Checkpoint(ctx); err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
}

// ownCheckpoints reads the node's own checkpoints from a read-only view of
// its database.
func ownCheckpoints(t *testing.T, cfg node.Config) []evidence.Signed {
	t.Helper()
	db, err := store.OpenReadOnly(filepath.Join(cfg.DataDir, "node.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cps, err := checkpoint.ReadSigned(context.Background(), db, cfg.NodeID)
	if err != nil {
		t.Fatal(err)
	}
	return cps
}

// TestCheckpointsAnchored: with a TSA configured, each checkpoint the node
// makes is kept with a time-stamp token over SHA-256 of the signed
// checkpoint, which verifies here and under `openssl ts -verify`; the
// export carries it, and the overview shows when the last was anchored.
func TestCheckpointsAnchored(t *testing.T) {
	tsa := tsatest.Start(t)
	s := nodetest.NewSpace(t)
	cfg := s.Config("uni-a")
	cfg.Checkpoint.Interval = time.Hour // the test publishes them
	cfg.Checkpoint.MaxAge = 2 * time.Hour
	cfg.Checkpoint.TSAURL, cfg.Checkpoint.TSACert = tsa.URL, tsa.CAFile
	n := s.Open(cfg)
	before := time.Now().Add(-2 * time.Second)
	ingestAndCheckpoint(t, n, "2024001")
	ingestAndCheckpoint(t, n, "2024002")

	cps := ownCheckpoints(t, cfg)
	if len(cps) < 2 {
		t.Fatalf("%d own checkpoints, want at least 2", len(cps))
	}
	var last time.Time
	for _, c := range cps {
		if c.TSAToken == nil {
			t.Fatalf("checkpoint at %d kept without a token", c.Count)
		}
		tok, err := timestamp.Parse(c.TSAToken)
		if err != nil {
			t.Fatal(err)
		}
		if err := tok.Verify(c.Digest(), tsa.CA); err != nil {
			t.Errorf("checkpoint at %d: %v", c.Count, err)
		}
		if tok.Time.Before(before) || tok.Time.After(time.Now().Add(2*time.Second)) {
			t.Errorf("checkpoint at %d anchored at %s, want about now", c.Count, tok.Time)
		}
		last = tok.Time
	}
	// openssl agrees.
	tokFile := filepath.Join(t.TempDir(), "token.der")
	if err := os.WriteFile(tokFile, cps[len(cps)-1].TSAToken, 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(t.TempDir(), "checkpoint")
	if err := os.WriteFile(data, cps[len(cps)-1].Data, 0o600); err != nil {
		t.Fatal(err)
	}
	if out := tsa.OpenSSL(t, nil, "ts", "-verify", "-data", data, "-in", tokFile, "-token_in", "-CAfile", tsa.CAFile); !bytes.Contains(out, []byte("Verification: OK")) {
		t.Errorf("openssl ts -verify of the node's token: %s", out)
	}

	o := readOverview(t, n)
	if !o.Anchoring || !o.LastAnchoredT.Equal(last) {
		t.Errorf("overview: anchoring %v, last anchored %s; want true, %s", o.Anchoring, o.LastAnchoredT, last)
	}
	m := nodetest.Scrape(t, n)
	if got := metricValue(t, m, "eduspace_checkpoints_anchored_total"); got < len(cps) || metricValue(t, m, "eduspace_checkpoint_anchor_failures_total") != 0 {
		t.Errorf("metrics: want at least %d anchored and no failures:\n%s", len(cps), grepLines(m, "anchor"))
	}

	// The export carries the tokens.
	db, err := store.OpenReadOnly(filepath.Join(cfg.DataDir, "node.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var buf bytes.Buffer
	if err := checkpoint.Export(context.Background(), db, "uni-a", &buf); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(buf.String(), `"tsa_token":"`); got != len(cps) {
		t.Errorf("export has %d tsa_token fields, want %d", got, len(cps))
	}
	x, err := evidence.NewExportReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	read, err := x.Checkpoints()
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range read {
		if !bytes.Equal(c.TSAToken, cps[i].TSAToken) {
			t.Errorf("exported token of checkpoint %d differs from the stored one", c.Count)
		}
	}
}

// TestCheckpointsUnanchoredWhenTSADown: a TSA that does not answer does
// not stop checkpoints: they are published and kept unanchored, the
// failure counted; a node without a TSA says its checkpoints are
// unanchored.
func TestCheckpointsUnanchoredWhenTSADown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + l.Addr().String() + "/tsa"
	l.Close()

	s := nodetest.NewSpace(t)
	cfg := s.Config("uni-a")
	cfg.Checkpoint.Interval = time.Hour
	cfg.Checkpoint.MaxAge = 2 * time.Hour
	cfg.Checkpoint.TSAURL, cfg.Checkpoint.TSACert = down, writeSelfSignedCert(t)
	n := s.Open(cfg)
	ingestAndCheckpoint(t, n, "2024001")
	ingestAndCheckpoint(t, n, "2024002")
	cps := ownCheckpoints(t, cfg)
	if len(cps) < 2 {
		t.Fatalf("%d own checkpoints, want at least 2: a TSA that is down must not stop them", len(cps))
	}
	for _, c := range cps {
		if c.TSAToken != nil {
			t.Errorf("checkpoint at %d has a token from a TSA that is down", c.Count)
		}
	}
	// Each checkpoint made failed to be anchored (the node may have tried
	// one twice: at start and when the test asked).
	m := nodetest.Scrape(t, n)
	if got := metricValue(t, m, "eduspace_checkpoint_anchor_failures_total"); got < len(cps) || metricValue(t, m, "eduspace_checkpoints_anchored_total") != 0 {
		t.Errorf("metrics: want at least %d anchor failures, none anchored:\n%s", len(cps), grepLines(m, "anchor"))
	}
	if o := readOverview(t, n); !o.Anchoring || !o.LastAnchoredT.IsZero() || o.OwnCheckpoint == 0 {
		t.Errorf("overview %+v: want anchoring, none anchored, checkpoints published", o)
	}

	plain := s.Open(s.Config("uni-b"))
	if o := readOverview(t, plain); o.Anchoring || !o.LastAnchoredT.IsZero() {
		t.Errorf("overview of a node without a TSA %+v: want unanchored", o)
	}
}

// metricValue reads an unlabelled metric's value from a scrape.
func metricValue(t *testing.T, scrape, name string) int {
	t.Helper()
	for _, l := range strings.Split(scrape, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("%s: %v", l, err)
			}
			return n
		}
	}
	t.Fatalf("no metric %s in the scrape", name)
	return 0
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// writeSelfSignedCert writes a throwaway certificate allowed to stamp time,
// for a node whose TSA never answers.
func writeSelfSignedCert(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "unreachable TSA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageTimeStamping},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "tsa.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
