package bus

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// seedFile writes a new nkey user seed to a file and returns the file and
// the user's public key.
func seedFile(t *testing.T) (string, string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	pub, _ := kp.PublicKey()
	path := filepath.Join(t.TempDir(), "user.nk")
	if err := os.WriteFile(path, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, pub
}

// TestConnectErrorsSayWhatToDo: a connection the server refuses, or
// credentials that are not there, name the cause and the remedy: the seed
// file nats-config writes, credentials for a server that has no nkey users
// (a node's embedded server), none for one that wants them, or a seed the
// server does not know.
func TestConnectErrorsSayWhatToDo(t *testing.T) {
	embedded, err := StartEmbedded(t.TempDir(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer embedded.Shutdown()

	seed, pub := seedFile(t)
	other, _ := seedFile(t)
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		Nkeys: []*server.NkeyUser{{Nkey: pub}}})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	defer srv.Shutdown()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}

	for _, c := range []struct {
		name, url, creds string
		want             []string
	}{
		{"seed file missing", srv.ClientURL(), filepath.Join(t.TempDir(), "operator.nk"), []string{"operator.nk: no such file", "authority nats-config"}},
		{"credentials for the embedded server", embedded.ClientURL(), seed, []string{"no nkey users", "without credentials"}},
		{"no credentials for a server with users", srv.ClientURL(), "", []string{"wants credentials", "operator.nk"}},
		{"a seed the server does not know", srv.ClientURL(), other, []string{"no user for " + other, "reload the server"}},
	} {
		nc, err := Connect(ConnectOptions{Name: "test", URL: c.url, Credentials: c.creds})
		if err == nil {
			nc.Close()
			t.Errorf("%s: connected", c.name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", c.name, err, w)
			}
		}
	}
	// The seed the server knows connects.
	nc, err := Connect(ConnectOptions{Name: "test", URL: srv.ClientURL(), Credentials: seed})
	if err != nil {
		t.Fatalf("the server's own user: %v", err)
	}
	nc.Close()
}
