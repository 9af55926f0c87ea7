package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/admin"
	"github.com/eduspace/eduspace/node/authority"
	"github.com/eduspace/eduspace/test/wait"
)

// Binaries for the process-level suites, built once per test run.
var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binaries builds the eduspace command and a nats-server of the version
// the node embeds (the module's own main package).
func binaries(t *testing.T) (eduspace, natsServer string) {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "eduspace-bin-")
		if buildErr != nil {
			return
		}
		root := moduleRoot(t)
		for _, b := range []struct{ out, pkg string }{
			{"eduspace", "./cmd/eduspace"},
			{"nats-server", "github.com/nats-io/nats-server/v2"},
		} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, b.out), b.pkg)
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "eduspace"), filepath.Join(binDir, "nats-server")
}

// proc is a restartable child process whose output goes to a log file.
type proc struct {
	t    *testing.T
	name string
	args []string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
}

func newProc(t *testing.T, dir, name string, args ...string) *proc {
	p := &proc{t: t, name: name, args: args, log: filepath.Join(dir, name+".log")}
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			data, _ := os.ReadFile(p.log)
			if len(data) > 4000 {
				data = data[len(data)-4000:]
			}
			// One message a line: a CI summary that keeps only the lines
			// naming a file shows them all.
			t.Logf("--- last output of %s:", name)
			for _, line := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
				t.Logf("%s| %s", name, line)
			}
		}
	})
	return p
}

func (p *proc) start() {
	p.t.Helper()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	fmt.Fprintf(f, "=== start %s\n", time.Now().Format(time.RFC3339Nano))
	p.cmd = exec.Command(p.args[0], p.args[1:]...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		f.Close()
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	p.done = make(chan struct{})
	go func() {
		p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.cmd = nil
}

// stop sends SIGTERM and waits up to 20 s for a clean exit.
func (p *proc) stop() error {
	if p.cmd == nil {
		return nil
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		err := p.cmd.ProcessState
		p.cmd = nil
		if !err.Success() {
			return fmt.Errorf("%s exited with %v", p.name, err)
		}
		return nil
	case <-time.After(20 * time.Second):
		p.kill()
		return fmt.Errorf("%s did not stop within 20s of SIGTERM", p.name)
	}
}

// nodeProc is a node run as a process of the eduspace binary.
type nodeProc struct {
	*proc
	id, dir, admin, token string
}

// procSpace is a space whose NATS server and nodes are separate processes.
type procSpace struct {
	t        *testing.T
	dir      string
	bin      string
	nats     *proc
	natsAddr string
	ak       *crypto.AuthorityKey
}

func newProcSpace(t *testing.T) *procSpace {
	t.Helper()
	bin, natsBin := binaries(t)
	dir := t.TempDir()
	s := &procSpace{t: t, dir: dir, bin: bin, natsAddr: stableAddr(t)}
	host, port, _ := net.SplitHostPort(s.natsAddr)
	s.nats = newProc(t, dir, "nats-server", natsBin, "-js", "-sd", filepath.Join(dir, "jetstream"), "-a", host, "-p", port)
	s.nats.start()
	wait.Until(t, 20*time.Second, "nats-server to listen", func() bool {
		c, err := net.Dial("tcp", s.natsAddr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	if _, err := authority.Init(filepath.Join(dir, "authority")); err != nil {
		t.Fatal(err)
	}
	ak, err := authority.Load(filepath.Join(dir, "authority"))
	if err != nil {
		t.Fatal(err)
	}
	s.ak = ak
	return s
}

func (s *procSpace) node(id string, maxRecords int) *nodeProc {
	s.t.Helper()
	nd := filepath.Join(s.dir, id)
	keys, err := authority.Provision(s.ak, nd, id, crypto.DefaultSuite, authority.Member{
		Space: "fault", Institution: id, Role: crypto.RoleUniversity, Valid: time.Hour}, time.Now())
	if err != nil {
		s.t.Fatal(err)
	}
	admin := stableAddr(s.t)
	cfg := fmt.Sprintf("node_id: %s\nspace: fault\ndata_dir: %s\nauthority_public_key: %s\nnats:\n  url: nats://%s\nadmin:\n  listen: %s\nbatch:\n  max_records: %d\nlog_level: warn\n",
		id, nd, filepath.Join(s.dir, "authority", authority.PublicKeyFile), s.natsAddr, admin, maxRecords)
	cfgPath := filepath.Join(s.dir, id+".yaml")
	os.WriteFile(cfgPath, []byte(cfg), 0o644)
	p := &nodeProc{proc: newProc(s.t, s.dir, id, s.bin, "node", "run", "--config", cfgPath), id: id, dir: nd, admin: admin, token: keys.AdminToken}
	return p
}

// startReady starts the node and waits until /readyz answers 200.
func (p *nodeProc) startReady() {
	p.t.Helper()
	p.start()
	wait.Until(p.t, 20*time.Second, p.id+" ready", func() bool {
		resp, err := http.Get("http://" + p.admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// call posts to the node's admin API; it returns the decoded answer or an
// error (a killed node answers with an error, which fault tests expect).
func (p *nodeProc) call(ctx context.Context, method, path string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+p.admin+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(data)))
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

func (p *nodeProc) received(ctx context.Context) int64 {
	var st admin.Status
	if err := p.call(ctx, http.MethodGet, "/v1/status", nil, &st); err != nil {
		return -1
	}
	return st.Received
}
