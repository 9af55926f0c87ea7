package node

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/catalogue"
	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/node/linkage"
	"github.com/eduspace/eduspace/node/registry"
)

// Config is a node's configuration, read from a YAML file (see
// deploy/node.example.yaml for every key with its meaning).
type Config struct {
	// NodeID is this node's id in the space: lower case letters, digits,
	// '-' and '_'. It must match the member credential.
	NodeID string `yaml:"node_id"`
	// Space is the data space's name, as in the credential.
	Space string `yaml:"space"`
	// DataDir holds the database, keys, credential and the embedded NATS
	// store.
	DataDir string `yaml:"data_dir"`
	// AuthorityKey is the PEM file of the authority's root public key, the
	// node's trust anchor.
	AuthorityKey string `yaml:"authority_public_key"`
	// Credential is the member credential (a JWT) the authority issued;
	// default DataDir/credential.jwt.
	Credential string `yaml:"credential"`
	// Suite is the HPKE suite used to seal to peers.
	Suite string `yaml:"suite"`
	// Rulebook is the space's rulebook (JSON, see policy/REASONS.md and
	// policy.ParseRulebook); empty uses GRADING.md §7 as written.
	Rulebook string `yaml:"rulebook"`

	NATS    NATSConfig    `yaml:"nats"`
	Admin   AdminConfig   `yaml:"admin"`
	Metrics MetricsConfig `yaml:"metrics"`
	Batch   BatchConfig   `yaml:"batch"`
	// Checkpoint sets how the evidence log is committed on the space.
	Checkpoint CheckpointConfig `yaml:"checkpoint"`
	// Storage sets what the node needs of its disk.
	Storage StorageConfig `yaml:"storage"`
	// Aggregate sets what this node requires of aggregate queries.
	Aggregate AggregateConfig `yaml:"aggregate"`
	// Release sets the defaults of dataset releases (node/release).
	Release ReleaseConfig `yaml:"release"`
	// DSP is the Dataspace Protocol catalogue endpoint.
	DSP DSPConfig `yaml:"dsp"`
	// Linkage sets the rate limits this node holds other members to when
	// the space policy names it the linkage evaluator (node/linkage).
	Linkage linkage.Limits `yaml:"linkage"`

	// EnvelopeTTL is how long a sealed envelope stays acceptable.
	EnvelopeTTL time.Duration `yaml:"envelope_ttl"`
	// ClockSkew is how far peers' clocks may be from this node's: an
	// envelope created further ahead is refused, and an agreement counts
	// as in force this far either side of its validity when an envelope
	// arrives.
	ClockSkew time.Duration `yaml:"clock_skew"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`
}

// NATSConfig says where the space's NATS servers are.
type NATSConfig struct {
	// URL of the space's NATS servers; empty starts an embedded server with
	// JetStream in DataDir/nats.
	URL string `yaml:"url"`
	// Credentials is a NATS .creds file for URL, optional.
	Credentials string `yaml:"credentials"`
	// Listen is where the embedded server accepts clients (host:port), on
	// loopback only: it has no accounts. Empty accepts in-process clients
	// only. Nodes on other machines join a nats-server configured with
	// `eduspace authority nats-config`.
	Listen string `yaml:"listen"`
	// Domain is the JetStream domain of the space's streams when the node
	// reaches them through a leaf node (the hub's domain, e.g. "hub");
	// empty for a direct connection.
	Domain string `yaml:"domain"`
	// Replicas is how many copies of the space's streams a node creates
	// when it finds them missing (servers without permissions only; the
	// operator's `authority nats-setup --replicas` otherwise); 0 means 1.
	Replicas int `yaml:"replicas"`
}

// AdminConfig is the admin HTTP API.
type AdminConfig struct {
	// Listen is the admin API's address; empty disables it.
	Listen string `yaml:"listen"`
	// Hosts are the names clients reach the listener by (the Host header),
	// besides loopback's and Listen's own host. A request naming another
	// host is refused: a web page cannot reach the API through a name of
	// its own that resolves to this machine (DNS rebinding). Required when
	// Listen accepts connections on every address.
	Hosts []string `yaml:"hosts"`
}

// MetricsConfig is the Prometheus endpoint.
type MetricsConfig struct {
	// Listen is where /metrics is served; empty serves it on the admin
	// listener.
	Listen string `yaml:"listen"`
	// Hosts are the names Prometheus reaches Listen by, as for admin.hosts.
	Hosts []string `yaml:"hosts"`
}

// BatchConfig sets how records are packed into envelopes.
type BatchConfig struct {
	// MaxRecords closes an envelope at this many records, or earlier at
	// half the NATS server's maximum message size (512 KiB of records,
	// about 900 of 600 bytes, under NATS's default 1 MiB; 4 MiB under the
	// embedded server's 8 MiB). Larger envelopes spread the per-envelope
	// costs (one HPKE setup, one signature, one commit at each end, one
	// receipt entry) over more records: in `eduspace bench`, 900 records
	// move 10 % more records per CPU second than 500, and 2,000 another
	// 15 % (test/PERFORMANCE.md has the figures).
	MaxRecords int `yaml:"max_records"`
}

// CheckpointConfig sets the evidence checkpoints.
type CheckpointConfig struct {
	// Interval is how often the node signs and publishes a checkpoint of
	// its evidence log when the log has grown.
	Interval time.Duration `yaml:"interval"`
	// MaxAge is how long evidence may stay uncovered by a published
	// checkpoint before the node stops sending (fails closed).
	MaxAge time.Duration `yaml:"max_age"`
	// TSAURL, when set, is an RFC 3161 time-stamping authority that
	// anchors each of the node's checkpoints: it is sent SHA-256 of the
	// signed checkpoint, and the token it returns is kept with the
	// checkpoint and exported. A TSA that fails leaves checkpoints
	// unanchored; they are published all the same.
	TSAURL string `yaml:"tsa_url"`
	// TSACert is a PEM file of the TSA's certificate, or of the CA that
	// issued it: every token must verify under it before it is kept.
	// Required with TSAURL.
	TSACert string `yaml:"tsa_cert"`
}

// StorageConfig sets what the node needs of the disk under DataDir.
type StorageConfig struct {
	// MinFreeMiB is the free space below which the node is not ready
	// (/readyz 503, and the status page says why): it keeps working, but a
	// disk that fills stops it storing what arrives until there is room.
	MinFreeMiB int64 `yaml:"min_free_mib"`
	// Encrypt seals the records the node holds and those it received at
	// rest, under the data key in data_dir/keys/data.key.pem (AES-256-GCM),
	// so that the database file holds no personal value in clear. Records
	// stored in clear before are sealed in the background at start.
	Encrypt bool `yaml:"encrypt"`
}

// AggregateConfig sets what a node requires of the aggregate queries it
// submits (a center) or takes part in (a university).
type AggregateConfig struct {
	// Colluders is the fewest colluding universities c a query must
	// tolerate: a query with fewer is refused at submission and declined
	// by a university (too_few_colluders). The query's threshold must
	// then exceed (n + c)/2, and its noise is planned for t − c honest
	// universities (node/aggregate/AGGREGATES.md §1).
	Colluders int `yaml:"colluders"`
}

// ReleaseConfig sets the defaults of dataset releases
// (node/release/RELEASES.md).
type ReleaseConfig struct {
	// K is the k of k-anonymity a release reaches unless it asks for
	// another (--k); at least 2.
	K int `yaml:"k"`
	// MaxSuppress is the largest fraction of its records a release may
	// suppress to reach k; a release that would need more is refused
	// (release_k_unmet).
	MaxSuppress float64 `yaml:"max_suppress"`
}

// DSPConfig is the Dataspace Protocol 2024/1 catalogue endpoint
// (node/catalogue/CATALOGUE.md §4): the datasets this node offers, for
// connectors such as Eclipse EDC. It shows noised metadata only and asks
// no authorization (§5).
type DSPConfig struct {
	// Listen is where the endpoint is served (host:port); empty, the
	// default, serves none.
	Listen string `yaml:"listen"`
	// URL is the endpoint's address as connectors reach it, given in the
	// catalogue as the data service's dcat:endpointURL; default
	// http://LISTEN. Required when Listen accepts connections on every
	// address.
	URL string `yaml:"url"`
	// RatePerMinute is how many requests one remote address (an IPv4
	// address, an IPv6 /64) may make a minute, Burst how many at once;
	// past them it is answered 429 with Retry-After. Behind a proxy every
	// request comes from the proxy's address: raise them, or limit there.
	RatePerMinute int `yaml:"rate_per_minute"`
	Burst         int `yaml:"burst"`
}

// DefaultConfig is the configuration every file starts from.
func DefaultConfig() Config {
	return Config{
		Suite:       crypto.DefaultSuite.String(),
		Admin:       AdminConfig{Listen: "127.0.0.1:7600"},
		Batch:       BatchConfig{MaxRecords: 2000},
		Checkpoint:  CheckpointConfig{Interval: 10 * time.Second, MaxAge: 5 * time.Minute},
		Storage:     StorageConfig{MinFreeMiB: 256, Encrypt: true},
		Aggregate:   AggregateConfig{Colluders: 1},
		Release:     ReleaseConfig{K: 5, MaxSuppress: 0.05},
		DSP:         DSPConfig{RatePerMinute: catalogue.DefaultDSPRate, Burst: catalogue.DefaultDSPBurst},
		Linkage:     linkage.DefaultLimits,
		EnvelopeTTL: 24 * time.Hour,
		ClockSkew:   5 * time.Minute,
		LogLevel:    "info",
	}
}

// LoadConfig reads a YAML file over DefaultConfig and validates it.
// Relative paths in the file are taken relative to the file's folder.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	cfg := DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	base := filepath.Dir(path)
	for _, p := range []*string{&cfg.DataDir, &cfg.AuthorityKey, &cfg.Credential, &cfg.NATS.Credentials, &cfg.Rulebook} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Validate checks every field; an error names the field that is wrong.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, a...)))
	}
	if !bus.ValidName(c.NodeID) {
		bad("node_id", "%q: use 1-63 lower case letters, digits, '-' or '_'", c.NodeID)
	}
	if !bus.ValidName(c.Space) {
		bad("space", "%q: use 1-63 lower case letters, digits, '-' or '_'", c.Space)
	}
	if c.Release.K < 2 || c.Release.K > 1000 {
		bad("release.k", "%d, want 2..1000 (a class of one record is that record)", c.Release.K)
	}
	if !(c.Release.MaxSuppress > 0 && c.Release.MaxSuppress < 0.5) {
		bad("release.max_suppress", "%v, want a fraction above 0 and below 0.5", c.Release.MaxSuppress)
	}
	if err := c.Linkage.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Aggregate.Colluders < 0 || c.Aggregate.Colluders > 98 {
		bad("aggregate.colluders", "%d, want 0..98 (a round has at most 100 universities)", c.Aggregate.Colluders)
	}
	if c.DataDir == "" {
		bad("data_dir", "required")
	}
	if c.AuthorityKey == "" {
		bad("authority_public_key", "required: the PEM file of the authority's root public key")
	}
	if _, err := crypto.ParseSuite(c.Suite); err != nil {
		bad("suite", "%q: %v", c.Suite, err)
	}
	if c.NATS.URL != "" && c.NATS.Listen != "" {
		bad("nats.listen", "only for the embedded server; leave it empty when nats.url is set")
	}
	if c.NATS.Domain != "" && (c.NATS.URL == "" || !bus.ValidName(c.NATS.Domain)) {
		bad("nats.domain", "%q: a JetStream domain name (lower case letters, digits, '-', '_'), only with nats.url", c.NATS.Domain)
	}
	if c.NATS.Replicas < 0 || c.NATS.Replicas > 5 {
		bad("nats.replicas", "%d: must be 0 to 5", c.NATS.Replicas)
	}
	if host, _, err := net.SplitHostPort(c.NATS.Listen); err == nil && !bus.Loopback(host) {
		bad("nats.listen", "%q: %v", c.NATS.Listen, bus.ErrEmbeddedNotLoopback)
	}
	if c.NATS.URL == "" && c.NATS.Credentials != "" {
		bad("nats.credentials", "only with nats.url")
	}
	if c.DSP.URL != "" {
		if p, err := url.Parse(c.DSP.URL); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			bad("dsp.url", "%q: must be an http or https URL", c.DSP.URL)
		} else if c.DSP.Listen == "" {
			bad("dsp.url", "set without dsp.listen: set dsp.listen to serve the endpoint")
		}
	} else if host, _, err := net.SplitHostPort(c.DSP.Listen); err == nil {
		if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
			bad("dsp.url", "required: dsp.listen %q accepts connections on every address; give the URL connectors reach it by", c.DSP.Listen)
		}
	}
	if c.DSP.RatePerMinute < 1 || c.DSP.RatePerMinute > 1_000_000 {
		bad("dsp.rate_per_minute", "%d, want 1..1000000 requests a minute per address", c.DSP.RatePerMinute)
	}
	if c.DSP.Burst < 1 || c.DSP.Burst > 100_000 {
		bad("dsp.burst", "%d, want 1..100000 requests at once per address", c.DSP.Burst)
	}
	for field, addr := range map[string]string{"nats.listen": c.NATS.Listen, "admin.listen": c.Admin.Listen, "metrics.listen": c.Metrics.Listen, "dsp.listen": c.DSP.Listen} {
		if addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad(field, "%q is not host:port", addr)
		}
	}
	for _, l := range []struct {
		field, listen string
		hosts         []string
	}{{"admin", c.Admin.Listen, c.Admin.Hosts}, {"metrics", c.Metrics.Listen, c.Metrics.Hosts}} {
		host, _, err := net.SplitHostPort(l.listen)
		if err != nil || len(l.hosts) > 0 {
			continue
		}
		if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
			bad(l.field+".hosts", "%s.listen %q accepts connections on every address: list the host names clients use", l.field, l.listen)
		}
	}
	if c.Batch.MaxRecords < 1 || c.Batch.MaxRecords > 10000 {
		bad("batch.max_records", "%d: must be 1 to 10000", c.Batch.MaxRecords)
	}
	if c.Checkpoint.Interval < 100*time.Millisecond {
		bad("checkpoint.interval", "%s: must be at least 100ms", c.Checkpoint.Interval)
	}
	if c.Storage.MinFreeMiB < 0 {
		bad("storage.min_free_mib", "%d: must be 0 or more", c.Storage.MinFreeMiB)
	}
	if u := c.Checkpoint.TSAURL; u != "" {
		if p, err := url.Parse(u); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			bad("checkpoint.tsa_url", "%q: must be an http or https URL", u)
		}
		if c.Checkpoint.TSACert == "" {
			bad("checkpoint.tsa_cert", "required with checkpoint.tsa_url: the PEM certificate of the TSA or its CA")
		}
	} else if c.Checkpoint.TSACert != "" {
		bad("checkpoint.tsa_cert", "set without checkpoint.tsa_url")
	}
	if c.Checkpoint.MaxAge < 2*c.Checkpoint.Interval {
		bad("checkpoint.max_age", "%s: must be at least twice checkpoint.interval", c.Checkpoint.MaxAge)
	}
	if c.EnvelopeTTL < time.Minute {
		bad("envelope_ttl", "%s: must be at least 1m", c.EnvelopeTTL)
	}
	if c.ClockSkew < 0 || c.ClockSkew > time.Hour {
		bad("clock_skew", "%s: must be 0 to 1h", c.ClockSkew)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level", "%q: use debug, info, warn or error", c.LogLevel)
	}
	return errors.Join(errs...)
}

// DSPURL is the DSP catalogue endpoint's URL as connectors reach it:
// dsp.url, or http://dsp.listen; "" when the endpoint is off.
func (c *Config) DSPURL() string {
	switch {
	case c.DSP.Listen == "":
		return ""
	case c.DSP.URL != "":
		return strings.TrimRight(c.DSP.URL, "/")
	}
	return "http://" + c.DSP.Listen
}

// CredentialPath is the member credential's file: credential, or
// data_dir/credential.jwt.
func (c *Config) CredentialPath() string {
	if c.Credential != "" {
		return c.Credential
	}
	return filepath.Join(c.DataDir, "credential.jwt")
}

// loadCredential reads the node's credential file and verifies it against
// the authority's key for the space at now; it must be issued to this node.
// It returns the credential and the token as issued (JWT).
func (c *Config) loadCredential(root crypto.AuthorityPublicKey, now time.Time) (*crypto.Credential, string, error) {
	tok, err := os.ReadFile(c.CredentialPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", fmt.Errorf("credential %s: no such file: have the space authority issue it from %s "+
			"(eduspace authority issue --request …), then put it there or name it in the config's credential",
			c.CredentialPath(), filepath.Join(c.DataDir, "node-request.json"))
	}
	if err != nil {
		return nil, "", fmt.Errorf("credential: %w", err)
	}
	token := strings.TrimSpace(string(tok))
	cred, err := crypto.ParseCredential(token, root, c.Space, now)
	if err != nil {
		return nil, "", fmt.Errorf("credential %s: %w", c.CredentialPath(), err)
	}
	if cred.NodeID != c.NodeID {
		return nil, "", fmt.Errorf("credential %s: issued to node %q, not %q", c.CredentialPath(), cred.NodeID, c.NodeID)
	}
	return cred, token, nil
}

// RotateKeys takes one step of a key rotation for the node of cfg (see
// keys.Rotate): its current credential must verify.
//
// Retiring is refused while envelopes sealed to the old keys may still
// arrive: until the credential in use (the one the switch requested) has
// been out for registry.CacheTTL (peers learn it), plus envelope_ttl
// (what they sealed before lives that long, where the space's nodes share
// one envelope_ttl), plus clock_skew. The error
// says when retiring is allowed. force retires at once, for an old key
// the authority revoked (envelopes sealed to it are refused anyway).
func RotateKeys(cfg Config, step keys.RotateStep, now time.Time, force bool) (keys.Rotation, error) {
	suite, err := crypto.ParseSuite(cfg.Suite)
	if err != nil {
		return keys.Rotation{Step: step}, fmt.Errorf("rotate keys: %w", err)
	}
	root, err := crypto.ReadAuthorityPublicKey(cfg.AuthorityKey)
	if err != nil {
		return keys.Rotation{Step: step}, fmt.Errorf("rotate keys: authority_public_key: %w", err)
	}
	cred, _, err := cfg.loadCredential(root, now)
	if err != nil {
		return keys.Rotation{Step: step}, fmt.Errorf("rotate keys: %w", err)
	}
	if step == keys.RotateRetire && len(cred.KEMKeys) > 1 && !force {
		until := cred.IssuedAt.Add(registry.CacheTTL + cfg.EnvelopeTTL + cfg.ClockSkew)
		if now.Before(until) {
			return keys.Rotation{Step: step}, fmt.Errorf("rotate keys: retire refused: envelopes sealed to the old keys may arrive until %s "+
				"(%s from now): the credential in use was issued %s, peers learn it within %s, and what they sealed before lives envelope_ttl (%s) "+
				"give or take clock_skew (%s); retire then, or now with --force if the authority revoked the old keys",
				until.UTC().Format(time.RFC3339), until.Sub(now).Round(time.Minute), cred.IssuedAt.UTC().Format(time.RFC3339),
				registry.CacheTTL, cfg.EnvelopeTTL, cfg.ClockSkew)
		}
	}
	return keys.Rotate(cfg.DataDir, cred, suite, step)
}
