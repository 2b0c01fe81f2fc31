// Package pgtest starts a throwaway PostgreSQL cluster for tests: initdb into
// a new temporary directory, pg_ctl start listening on 127.0.0.1 at a free
// port with its unix socket inside that directory, pg_ctl stop -m fast at the
// end. When the test process runs as root the server runs as the postgres OS
// user (PostgreSQL refuses to run as root). The server binaries come from
// PATH or /usr/lib/postgresql/*/bin; scripts/install-deps installs them, and
// their absence is an error, never a skip.
//
// A watchdog shell waits on a pipe from the test process: if the process dies
// without calling Stop (a panic, a -timeout, SIGKILL), the pipe closes and the
// watchdog stops the server and removes the directory, so no postmaster is
// left behind.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Superuser is the cluster's superuser role; it logs in over TCP with Password.
const Superuser = "postgres"

// Cluster is a running throwaway PostgreSQL server.
type Cluster struct {
	// Host and Port are the TCP listener: 127.0.0.1 and a free port.
	Host string
	Port int
	// Password is the superuser's password (random per cluster).
	Password string

	bin      string // directory holding initdb and pg_ctl
	dir      string // everything lives here: data/, sock/, log, pwfile
	runAs    *user.User
	watchdog *exec.Cmd
	wdPipe   *os.File
	stopped  atomic.Bool
}

var dbSeq atomic.Int64

// Start starts a cluster that is stopped, and its directory removed, when t's
// test finishes. It fails t when PostgreSQL cannot be started.
func Start(t testing.TB) *Cluster {
	t.Helper()
	c, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	})
	return c
}

// New starts a cluster that lives until Stop (or until the test process exits).
func New() (*Cluster, error) {
	bin, err := findBin()
	if err != nil {
		return nil, err
	}
	c := &Cluster{Host: "127.0.0.1", bin: bin}
	if os.Geteuid() == 0 {
		if c.runAs, err = user.Lookup("postgres"); err != nil {
			return nil, fmt.Errorf("pgtest: running as root and there is no postgres OS user to run the server as (%v): run scripts/install-deps", err)
		}
	}
	if c.dir, err = os.MkdirTemp("", "traverse-pgtest-"); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			_ = os.RemoveAll(c.dir)
		}
	}()
	pw := make([]byte, 16)
	if _, err := rand.Read(pw); err != nil {
		return nil, err
	}
	c.Password = hex.EncodeToString(pw)
	if err := os.Mkdir(c.sockDir(), 0o700); err != nil {
		return nil, err
	}
	pwfile := filepath.Join(c.dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(c.Password+"\n"), 0o600); err != nil {
		return nil, err
	}
	if err := c.chown(c.dir, c.sockDir(), pwfile); err != nil {
		return nil, err
	}
	if out, err := c.run("initdb", "-D", c.dataDir(), "-U", Superuser, "--pwfile", pwfile,
		"--auth-local=trust", "--auth-host=scram-sha-256", "--locale=C", "-E", "UTF8",
		"--no-sync", "--no-instructions"); err != nil {
		return nil, fmt.Errorf("pgtest: initdb: %v\n%s", err, out)
	}
	_ = os.Remove(pwfile)
	// A server for tests: durability off, loopback only, socket in our directory.
	conf := fmt.Sprintf(`
listen_addresses = '127.0.0.1'
unix_socket_directories = '%s'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
shared_buffers = 32MB
log_min_messages = warning
`, c.sockDir())
	if err := appendFile(filepath.Join(c.dataDir(), "postgresql.conf"), conf); err != nil {
		return nil, err
	}
	if err := c.startWatchdog(); err != nil {
		return nil, err
	}
	// The free port is found by binding and closing it, so another process
	// can take it before the postmaster binds: retry a few times.
	for attempt := 0; ; attempt++ {
		if c.Port, err = freePort(); err != nil {
			break
		}
		var out []byte
		out, err = c.run("pg_ctl", "-D", c.dataDir(), "-l", c.logFile(), "-w", "-t", "30",
			"-o", "-p "+strconv.Itoa(c.Port), "start")
		if err == nil {
			break
		}
		log, _ := os.ReadFile(c.logFile())
		err = fmt.Errorf("pgtest: pg_ctl start: %v\n%s%s", err, out, log)
		if attempt == 2 || !strings.Contains(string(log), "could not bind") {
			break
		}
	}
	if err != nil {
		c.stopWatchdog()
		return nil, err
	}
	ok = true
	return c, nil
}

// Stop stops the server (pg_ctl stop -m fast) and removes its directory.
// Calling it again does nothing.
func (c *Cluster) Stop() error {
	if c.stopped.Swap(true) {
		return nil
	}
	out, err := c.run("pg_ctl", "-D", c.dataDir(), "-m", "fast", "-w", "-t", "30", "stop")
	if err != nil {
		err = fmt.Errorf("pgtest: pg_ctl stop: %v\n%s", err, out)
	}
	c.stopWatchdog()
	if rmErr := os.RemoveAll(c.dir); rmErr != nil && err == nil {
		err = rmErr
	}
	return err
}

// Down stops the server (pg_ctl stop -m fast) and keeps its data, for a
// test of an outage; Up starts it again on the same port.
func (c *Cluster) Down() error {
	if out, err := c.run("pg_ctl", "-D", c.dataDir(), "-m", "fast", "-w", "-t", "30", "stop"); err != nil {
		return fmt.Errorf("pgtest: pg_ctl stop: %v\n%s", err, out)
	}
	return nil
}

// Up starts the server Down stopped, on the same port, and waits until it
// accepts connections.
func (c *Cluster) Up() error {
	if out, err := c.run("pg_ctl", "-D", c.dataDir(), "-l", c.logFile(), "-w", "-t", "30",
		"-o", "-p "+strconv.Itoa(c.Port), "start"); err != nil {
		log, _ := os.ReadFile(c.logFile())
		return fmt.Errorf("pgtest: pg_ctl start: %v\n%s%s", err, out, log)
	}
	return nil
}

// DSN returns the postgres:// URL of database db for the superuser, over TCP
// with the password.
func (c *Cluster) DSN(db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(Superuser, c.Password),
		Host:     net.JoinHostPort(c.Host, strconv.Itoa(c.Port)),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// CreateDatabase creates an empty database named name and returns its DSN.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) (string, error) {
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		return "", fmt.Errorf("pgtest: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("pgtest: create database %s: %w", name, err)
	}
	return c.DSN(name), nil
}

// NewDatabase creates a new, empty database with a unique name and returns
// its DSN; it fails t on error.
func (c *Cluster) NewDatabase(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dsn, err := c.CreateDatabase(ctx, fmt.Sprintf("t%d", dbSeq.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}

func (c *Cluster) dataDir() string { return filepath.Join(c.dir, "data") }
func (c *Cluster) sockDir() string { return filepath.Join(c.dir, "sock") }
func (c *Cluster) logFile() string { return filepath.Join(c.dir, "postgres.log") }

// command builds a server-side command: as the postgres OS user when we are root.
func (c *Cluster) command(tool string, args ...string) *exec.Cmd {
	path := filepath.Join(c.bin, tool)
	if c.runAs != nil {
		return exec.Command("runuser", append([]string{"-u", c.runAs.Username, "--", path}, args...)...)
	}
	return exec.Command(path, args...)
}

func (c *Cluster) run(tool string, args ...string) ([]byte, error) {
	cmd := c.command(tool, args...)
	cmd.Dir = c.dir
	// LC_ALL=C keeps initdb and pg_ctl from tripping over an unset locale.
	cmd.Env = append(os.Environ(), "LC_ALL=C", "PGDATA=")
	return cmd.CombinedOutput()
}

// startWatchdog starts a shell that blocks reading a pipe we hold; when the
// pipe closes (Stop, or this process dying) it stops the server if it still
// runs and removes the directory.
func (c *Cluster) startWatchdog() error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	ctl := c.command("pg_ctl", "-D", c.dataDir(), "-m", "fast", "-w", "stop").Args
	for i, a := range ctl {
		ctl[i] = shellQuote(a)
	}
	script := fmt.Sprintf(`read _ ; if [ -f %s ]; then %s >/dev/null 2>&1; fi; rm -rf %s`,
		shellQuote(filepath.Join(c.dataDir(), "postmaster.pid")), strings.Join(ctl, " "), shellQuote(c.dir))
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Stdin = r
	cmd.Env = append(os.Environ(), "LC_ALL=C", "PGDATA=")
	// Its own process group: a terminal's ^C to the tests must not kill it
	// before it has cleaned up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return fmt.Errorf("pgtest: start watchdog: %w", err)
	}
	r.Close()
	c.watchdog, c.wdPipe = cmd, w
	return nil
}

// stopWatchdog closes the pipe and waits for the watchdog to finish.
func (c *Cluster) stopWatchdog() {
	if c.watchdog == nil {
		return
	}
	c.wdPipe.Close()
	done := make(chan struct{})
	go func() { _ = c.watchdog.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(40 * time.Second):
		_ = c.watchdog.Process.Kill()
		<-done
	}
}

func (c *Cluster) chown(paths ...string) error {
	if c.runAs == nil {
		return nil
	}
	uid, _ := strconv.Atoi(c.runAs.Uid)
	gid, _ := strconv.Atoi(c.runAs.Gid)
	for _, p := range paths {
		if err := os.Chown(p, uid, gid); err != nil {
			return fmt.Errorf("pgtest: %w", err)
		}
	}
	return nil
}

// findBin returns the directory holding initdb and pg_ctl: the one on PATH,
// else the newest /usr/lib/postgresql/N/bin.
func findBin() (string, error) {
	var dirs []string
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			dirs = append(dirs, filepath.Dir(real))
		}
	}
	versions, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(versions, func(i, j int) bool { return pgVersion(versions[i]) > pgVersion(versions[j]) })
	dirs = append(dirs, versions...)
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "pg_ctl")) && isExec(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	return "", errors.New("pgtest: PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH or in /usr/lib/postgresql/*/bin: run scripts/install-deps")
}

func pgVersion(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

func isExec(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

func freePort() (int, error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
