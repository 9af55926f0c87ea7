package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DialOptions say how a node reaches its space.
type DialOptions struct {
	ConnectOptions
	// Domain is the JetStream domain of the space's hub, "" for none.
	Domain string
	// EmbeddedDir and EmbeddedListen start a server of the node's own,
	// with its JetStream store in EmbeddedDir, when neither URL nor
	// Embedded names one.
	EmbeddedDir, EmbeddedListen string
}

// Client is a node's connection to the space: the NATS connection, its
// JetStream context, the node's durable consumers, and the embedded
// server it started, if any.
type Client struct {
	NC *nats.Conn
	JS jetstream.JetStream

	emb      *Embedded // started by Dial; nil when not
	domain   string    // the JetStream domain, "" for none
	mu       sync.Mutex
	cons     map[string]jetstream.Consumer // by kind
	consumes []jetstream.ConsumeContext
}

// Dial connects to the space as o says, starting an embedded server when
// o names none. Close undoes it.
func Dial(o DialOptions) (_ *Client, err error) {
	c := &Client{cons: map[string]jetstream.Consumer{}, domain: o.Domain}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if o.Embedded == nil && o.URL == "" {
		if c.emb, err = StartEmbedded(o.EmbeddedDir, o.EmbeddedListen); err != nil {
			return nil, err
		}
		o.Embedded = c.emb
	}
	if c.NC, err = Connect(o.ConnectOptions); err != nil {
		return nil, err
	}
	if o.Domain != "" {
		c.JS, err = jetstream.NewWithDomain(c.NC, o.Domain)
	} else {
		c.JS, err = jetstream.New(c.NC)
	}
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return c, nil
}

// EmbeddedStarted reports whether Dial started a server of the node's own.
func (c *Client) EmbeddedStarted() bool { return c.emb != nil }

// Consume creates or updates the durable consumer name on stream, filtered
// to subject, and hands its messages to handle, buffering as buffer says.
// kind names it for Pending.
func (c *Client) Consume(ctx context.Context, kind, stream, name, subject string, handle func(jetstream.Msg), buffer jetstream.PullConsumeOpt) error {
	cons, err := Consumer(ctx, c.JS, stream, name, subject)
	if err != nil {
		return err
	}
	cc, err := cons.Consume(handle, buffer)
	if err != nil {
		return fmt.Errorf("consume %s: %w", subject, err)
	}
	c.mu.Lock()
	c.cons[kind] = cons
	c.consumes = append(c.consumes, cc)
	c.mu.Unlock()
	return nil
}

// Pending is how many messages wait on the consumer of kind: not yet
// delivered plus delivered and not yet acknowledged.
func (c *Client) Pending(ctx context.Context, kind string) (float64, error) {
	c.mu.Lock()
	cons := c.cons[kind]
	c.mu.Unlock()
	if cons == nil {
		return 0, fmt.Errorf("no %s consumer", kind)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, err
	}
	return float64(info.NumPending) + float64(info.NumAckPending), nil
}

// Connected reports whether the connection is up.
func (c *Client) Connected() bool { return c.NC != nil && c.NC.IsConnected() }

// MaxPayload is the largest message the server accepts.
func (c *Client) MaxPayload() int64 { return c.NC.MaxPayload() }

// StopConsuming drains the consumers: no new message is handed over, and
// it returns once those handed over are handled or ctx ends.
func (c *Client) StopConsuming(ctx context.Context) {
	c.mu.Lock()
	consumes := c.consumes
	c.consumes = nil
	c.mu.Unlock()
	for _, cc := range consumes {
		cc.Drain()
	}
	for _, cc := range consumes {
		select {
		case <-cc.Closed():
		case <-ctx.Done():
		}
	}
}

// Close drains the connection and stops the server Dial started.
func (c *Client) Close() error {
	var err error
	if c.NC != nil {
		if e := c.NC.Drain(); e != nil && !errors.Is(e, nats.ErrConnectionClosed) {
			err = fmt.Errorf("drain nats: %w", e)
		}
	}
	if c.emb != nil {
		c.emb.Shutdown()
	}
	return err
}

// LastMessage is the newest message on subject in stream, read with a
// direct get, nil when there is none. It needs no STREAM.INFO, which
// members do not have, only the stream's allow_direct and a permission
// for the subject (AuditStreamConfig, MemberPermissions).
func (c *Client) LastMessage(ctx context.Context, stream, subject string) ([]byte, error) {
	api := "$JS.API."
	if c.domain != "" {
		api = "$JS." + c.domain + ".API."
	}
	msg, err := c.NC.RequestWithContext(ctx, api+"DIRECT.GET."+stream+"."+subject, nil)
	if err != nil {
		return nil, fmt.Errorf("read the newest message on %s: %w", subject, err)
	}
	switch status := msg.Header.Get("Status"); status {
	case "":
		return msg.Data, nil
	case "404":
		return nil, nil
	default:
		return nil, fmt.Errorf("read the newest message on %s: %s %s", subject, status, msg.Header.Get("Description"))
	}
}
