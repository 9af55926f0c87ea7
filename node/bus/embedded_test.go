package bus

import (
	"net"
	"strings"
	"testing"
)

// TestEmbeddedPortTaken: an embedded server asked to listen on a port
// another process holds fails before starting, naming the address and
// the cause (not after waiting for a server that never gets ready).
func TestEmbeddedPortTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	e, err := StartEmbedded(t.TempDir(), ln.Addr().String())
	if err == nil {
		e.Shutdown()
		t.Fatal("an embedded server started on a port already taken")
	}
	if !strings.Contains(err.Error(), ln.Addr().String()) || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("error %q: want the address and \"address already in use\"", err)
	}
}
