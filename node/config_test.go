package node

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/eduspace/eduspace/crypto"
)

func TestExampleConfigLoads(t *testing.T) {
	cfg, err := LoadConfig(filepath.Join("..", "deploy", "node.example.yaml"))
	if err != nil {
		t.Fatalf("deploy/node.example.yaml: %v", err)
	}
	def := DefaultConfig()
	if cfg.Aggregate != def.Aggregate || def.Aggregate.Colluders != 1 {
		t.Errorf("aggregate: the example has %+v, DefaultConfig %+v; want colluders 1 in both", cfg.Aggregate, def.Aggregate)
	}
	if cfg.Suite != def.Suite || cfg.Batch != def.Batch || cfg.EnvelopeTTL != def.EnvelopeTTL || cfg.Admin.Listen != def.Admin.Listen || !slices.Equal(cfg.Admin.Hosts, def.Admin.Hosts) {
		t.Errorf("the example's values differ from DefaultConfig: got %+v", cfg)
	}
}

// TestExampleConfigHasEveryKey: deploy/node.example.yaml shows every key
// of Config, nested ones under their section, so that it documents them
// all.
func TestExampleConfigHasEveryKey(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "deploy", "node.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	var walk func(typ reflect.Type, in map[string]any, path string)
	walk = func(typ reflect.Type, in map[string]any, path string) {
		for f := range typ.Fields() {
			key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if key == "" || key == "-" {
				continue
			}
			v, ok := in[key]
			if !ok {
				t.Errorf("deploy/node.example.yaml lacks %s%s", path, key)
				continue
			}
			if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[time.Duration]() {
				sub, _ := v.(map[string]any)
				walk(f.Type, sub, path+key+".")
			}
		}
	}
	walk(reflect.TypeFor[Config](), doc, "")
}

func TestConfigErrorsNameTheField(t *testing.T) {
	valid := func() Config {
		c := DefaultConfig()
		c.NodeID, c.Space, c.DataDir, c.AuthorityKey = "uni-a", "demo", "/tmp/x", "/tmp/a.pem"
		return c
	}
	if c := valid(); c.Validate() != nil {
		t.Fatalf("valid config refused: %v", c.Validate())
	}
	for _, tc := range []struct {
		field string
		edit  func(*Config)
	}{
		{"node_id", func(c *Config) { c.NodeID = "Uni A" }},
		{"space", func(c *Config) { c.Space = "" }},
		{"data_dir", func(c *Config) { c.DataDir = "" }},
		{"authority_public_key", func(c *Config) { c.AuthorityKey = "" }},
		{"suite", func(c *Config) { c.Suite = "rsa" }},
		{"nats.listen", func(c *Config) { c.NATS.URL, c.NATS.Listen = "nats://127.0.0.1:4222", "127.0.0.1:4223" }},
		{"nats.credentials", func(c *Config) { c.NATS.Credentials = "x.creds" }},
		{"admin.listen", func(c *Config) { c.Admin.Listen = "7600" }},
		{"admin.hosts", func(c *Config) { c.Admin.Listen = "0.0.0.0:7600" }},
		{"metrics.hosts", func(c *Config) { c.Metrics.Listen = ":7601" }},
		{"nats.listen", func(c *Config) { c.NATS.Listen = "0.0.0.0:4222" }},
		{"nats.listen", func(c *Config) { c.NATS.Listen = "192.0.2.7:4222" }},
		{"batch.max_records", func(c *Config) { c.Batch.MaxRecords = 0 }},
		{"dsp.listen", func(c *Config) { c.DSP.Listen = "8282" }},
		{"dsp.rate_per_minute", func(c *Config) { c.DSP.RatePerMinute = 0 }},
		{"dsp.burst", func(c *Config) { c.DSP.Burst = -1 }},
		{"dsp.url", func(c *Config) { c.DSP.Listen = "0.0.0.0:8282" }},
		{"dsp.url", func(c *Config) { c.DSP.Listen, c.DSP.URL = "127.0.0.1:8282", "ftp://x" }},
		{"dsp.url", func(c *Config) { c.DSP.URL = "https://dsp.uni-a.example" }},
		{"envelope_ttl", func(c *Config) { c.EnvelopeTTL = 0 }},
		{"clock_skew", func(c *Config) { c.ClockSkew = 2 * time.Hour }},
		{"log_level", func(c *Config) { c.LogLevel = "loud" }},
		{"aggregate.colluders", func(c *Config) { c.Aggregate.Colluders = -1 }},
		{"aggregate.colluders", func(c *Config) { c.Aggregate.Colluders = 99 }},
		{"checkpoint.tsa_url", func(c *Config) { c.Checkpoint.TSAURL, c.Checkpoint.TSACert = "tsa.example:80", "tsa.pem" }},
		{"checkpoint.tsa_cert", func(c *Config) { c.Checkpoint.TSAURL = "https://tsa.example/tsr" }},
		{"checkpoint.tsa_cert", func(c *Config) { c.Checkpoint.TSACert = "tsa.pem" }},
	} {
		c := valid()
		tc.edit(&c)
		err := c.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), tc.field+":") {
			t.Errorf("%s: got error %v, want one starting %q", tc.field, err, tc.field+":")
		}
	}
}

func TestConfigUnknownKeyRefused(t *testing.T) {
	p := filepath.Join(t.TempDir(), "node.yaml")
	os.WriteFile(p, []byte("node_id: a\nspace: s\ndata_dir: d\nauthority_public_key: k\nbatch:\n  max_record: 5\n"), 0o644)
	_, err := LoadConfig(p)
	if err == nil || !strings.Contains(err.Error(), "max_record") {
		t.Errorf("got %v, want an error naming the unknown key max_record", err)
	}
}

// TestMissingCredentialSaysWhatToDo: a node started before its credential
// is in place names the file it looked for and the request to have it
// issued from.
func TestMissingCredentialSaysWhatToDo(t *testing.T) {
	dir := t.TempDir()
	c := Config{NodeID: "uni-a", Space: "s", DataDir: dir}
	_, _, err := c.loadCredential(crypto.AuthorityPublicKey{}, time.Now())
	for _, want := range []string{filepath.Join(dir, "credential.jwt") + ": no such file", filepath.Join(dir, "node-request.json"), "eduspace authority issue"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v: want %q in it", err, want)
		}
	}
}
