package admin

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"
)

// TestShutdownClosesIdleNewConnections: a client connection that never
// sends its request (as Go's HTTP client leaves behind when two requests
// race for one connection) keeps net/http's Shutdown waiting; at the end
// of the grace period it is closed and the stop is clean.
func TestShutdownClosesIdleNewConnections(t *testing.T) {
	s := &Server{log: slog.New(slog.DiscardHandler)}
	addr, err := s.listen("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with a connection that sent nothing: %v; want a clean stop", err)
	}
	// Closed: an end of file, or a reset where the server had not yet
	// accepted it; a timeout would mean it was left open.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 1))
	if ne, ok := err.(net.Error); err == nil || ok && ne.Timeout() {
		t.Fatalf("the open connection: read %d bytes, %v; want it closed", n, err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Fatal("the listener still accepts after Shutdown")
	}
}
