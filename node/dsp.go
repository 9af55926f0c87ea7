package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/eduspace/eduspace/node/catalogue"
)

// dspServer is the listener of the Dataspace Protocol catalogue endpoint
// (dsp.listen; node/catalogue serves it). It is public: no Host check,
// no token (node/catalogue/CATALOGUE.md §5), and bounded in what one
// request may hold and take.
type dspServer struct {
	ln  net.Listener
	url string // as connectors reach it: dsp.url, or http:// the address bound
	srv *http.Server
	wg  sync.WaitGroup
}

// bind opens dsp.listen, when set.
func (d *dspServer) bind(cfg Config) error {
	if cfg.DSP.Listen == "" {
		return nil
	}
	ln, err := net.Listen("tcp", cfg.DSP.Listen)
	if err != nil {
		return fmt.Errorf("dsp.listen %s: %w", cfg.DSP.Listen, err)
	}
	d.ln = ln
	d.url = cfg.DSPURL()
	if cfg.DSP.URL == "" {
		d.url = "http://" + ln.Addr().String()
	}
	return nil
}

// serve starts serving h on the bound listener.
func (d *dspServer) serve(h http.Handler, log *slog.Logger) {
	if d.ln == nil {
		return
	}
	d.srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10}
	d.wg.Go(func() {
		if err := d.srv.Serve(d.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("DSP endpoint stopped", "addr", d.ln.Addr().String(), "err", err)
		}
	})
	log.Info("DSP catalogue endpoint listening", "addr", d.ln.Addr().String(), "url", d.url)
}

// shutdown stops the endpoint, waiting for requests under way until ctx
// ends; a listener bound but never served is closed.
func (d *dspServer) shutdown(ctx context.Context) error {
	if d.srv == nil {
		if d.ln != nil {
			d.ln.Close()
			d.ln = nil
		}
		return nil
	}
	err := d.srv.Shutdown(ctx)
	if err != nil {
		d.srv.Close()
	}
	d.wg.Wait()
	d.srv = nil
	return err
}

// DSPURL is the URL of the node's DSP catalogue endpoint ("" when
// dsp.listen is off).
func (n *Node) DSPURL() string { return n.dsp.url }

// Catalogue is the node's catalogue of offered datasets.
func (n *Node) Catalogue() *catalogue.Catalogue { return n.cat }
