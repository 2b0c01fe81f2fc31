// Package packaging_test checks the files operators install traverse with —
// the systemd unit, the Dockerfile and the Compose trial — against the
// binary they run and the defaults it has. Images cannot be built here, so
// what can be checked by reading is checked.
package packaging_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/traverse/traverse/config"
	"github.com/traverse/traverse/internal/testbin"
)

// binary is traverse, built once for these tests.
var binary string

func TestMain(m *testing.M) { testbin.Main(m, &binary) }

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// unitValues are the values of key in the unit, in order.
func unitValues(unit, key string) []string {
	var out []string
	for _, line := range strings.Split(unit, "\n") {
		if v, ok := strings.CutPrefix(line, key+"="); ok {
			out = append(out, v)
		}
	}
	return out
}

// TestSystemdUnit: systemd-analyze verify accepts the unit (in a scratch
// root holding the built binary), its ExecStart parses as `traverse serve`
// with flags the binary knows, and it carries what the README promises.
func TestSystemdUnit(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze not found: scripts/install-deps installs Debian's systemd package")
	}
	unit := read(t, "systemd/traverse.service")

	root := t.TempDir()
	copyFile(t, binary, filepath.Join(root, "usr/local/bin/traverse"), 0o755)
	copyFile(t, "/bin/kill", filepath.Join(root, "bin/kill"), 0o755)
	copyFile(t, "systemd/traverse.service", filepath.Join(root, "etc/systemd/system/traverse.service"), 0o644)
	// The targets the unit orders itself after come from the host.
	if err := os.MkdirAll(filepath.Join(root, "lib/systemd"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-r", "/lib/systemd/system", filepath.Join(root, "lib/systemd/")).CombinedOutput(); err != nil {
		t.Fatalf("copy the host's units: %v %s", err, out)
	}
	out, err := exec.Command(analyze, "verify", "--man=no", "--root="+root, "/etc/systemd/system/traverse.service").CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}

	exec_ := unitValues(unit, "ExecStart")
	if len(exec_) != 1 {
		t.Fatalf("ExecStart lines: %q", exec_)
	}
	args := strings.Fields(exec_[0])
	if args[0] != "/usr/local/bin/traverse" || len(args) < 2 || args[1] != "serve" {
		t.Fatalf("ExecStart = %q, want /usr/local/bin/traverse serve …", exec_[0])
	}
	// The binary parses the same arguments: --help after them fails on an
	// unknown flag or subcommand, and names the command it resolved.
	help, err := exec.Command(binary, append(args[1:], "--help")...).CombinedOutput()
	if err != nil || !strings.Contains(string(help), "Run the relay and the issuer") {
		t.Fatalf("traverse %s --help: %v\n%s", strings.Join(args[1:], " "), err, help)
	}

	for key, want := range map[string]string{
		"AmbientCapabilities": "CAP_NET_BIND_SERVICE", "StateDirectory": "traverse", "NoNewPrivileges": "yes",
		"ProtectSystem": "strict", "ExecReload": "/bin/kill -HUP $MAINPID", "User": "traverse",
		"Environment": "TRAVERSE_DATA_DIR=/var/lib/traverse",
	} {
		if !slices.Contains(unitValues(unit, key), want) {
			t.Errorf("%s=%s missing", key, want)
		}
	}
	// LimitNOFILE is sized for many allocations (2 descriptors each at most).
	nofile, err := strconv.Atoi(unitValues(unit, "LimitNOFILE")[0])
	if err != nil || nofile < 65536 {
		t.Errorf("LimitNOFILE = %v", unitValues(unit, "LimitNOFILE"))
	}
	if !strings.Contains(read(t, "systemd/traverse-sysusers.conf"), "u traverse ") {
		t.Error("traverse-sysusers.conf does not create the traverse user")
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}

// goBuild is the static build command of a script or Dockerfile line:
// its environment, flags and package, with the version variable's name
// left out.
func goBuild(t *testing.T, text, where string) string {
	t.Helper()
	m := regexp.MustCompile(`(CGO_ENABLED=\d) go build (-trimpath) -ldflags "([^"]*)" -o \S+ (\S+)`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("%s: no static go build line", where)
	}
	ldflags := regexp.MustCompile(`\$\{?\w+\}?`).ReplaceAllString(m[3], "$VERSION")
	return strings.Join([]string{m[1], m[2], ldflags, m[4]}, " | ")
}

// TestDockerfile: the image builds as scripts/build does, its data
// directory exists, belongs to the runtime user and is the default data_dir,
// and it exposes the default ports.
func TestDockerfile(t *testing.T) {
	df := read(t, "../Dockerfile")
	if got, want := goBuild(t, df, "Dockerfile"), goBuild(t, read(t, "../scripts/build"), "scripts/build"); got != want {
		t.Errorf("Dockerfile builds with %q, scripts/build with %q", got, want)
	}

	instr := func(name string) []string {
		var out []string
		for _, line := range strings.Split(strings.ReplaceAll(df, "\\\n", " "), "\n") {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				out = append(out, strings.TrimSpace(v))
			}
		}
		return out
	}
	const dataDir, nonroot = "/var/lib/traverse", "65532:65532" // distroless's nonroot is 65532
	if u := instr("USER"); len(u) != 1 || u[0] != "nonroot:nonroot" {
		t.Errorf("USER %v", u)
	}
	if !slices.Contains(instr("COPY"), "--from=build --chown="+nonroot+" /out/data "+dataDir) {
		t.Errorf("no COPY of the data directory owned by nonroot: %v", instr("COPY"))
	}
	if w := instr("WORKDIR"); w[len(w)-1] != dataDir {
		t.Errorf("final WORKDIR %v", w)
	}
	if v := instr("VOLUME"); len(v) != 1 || v[0] != dataDir {
		t.Errorf("VOLUME %v", v)
	}
	env := strings.Fields(strings.Join(instr("ENV"), " "))
	if !slices.Contains(env, config.EnvDataDir+"="+dataDir) || !slices.Contains(env, config.EnvConfig+"=/etc/traverse/traverse.yaml") {
		t.Errorf("ENV %v", env)
	}
	if !strings.Contains(df, "RUN mkdir -p /out/data") {
		t.Error("the build stage does not make the data directory")
	}

	// EXPOSE lists exactly the default listeners and relay range.
	d := config.Default()
	want := map[string]bool{}
	port := func(addr string) string { _, p, _ := strings.Cut(addr, ":"); return p }
	for _, a := range d.Listen.UDP {
		want[port(a)+"/udp"] = true
	}
	for _, a := range append(d.Listen.TCP, d.Listen.TLS...) {
		want[port(a)+"/tcp"] = true
	}
	want[fmt.Sprintf("%d-%d/udp", d.Relay.Ports.Min, d.Relay.Ports.Max)] = true
	want[port(d.Issuer.Listen)+"/tcp"] = true
	want[port(d.Metrics.Listen)+"/tcp"] = true
	got := map[string]bool{}
	for _, e := range instr("EXPOSE") {
		for _, p := range strings.Fields(e) {
			got[p] = true
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("EXPOSE %v, defaults %v", got, want)
	}
}

// TestCompose: the Compose trial parses, runs both nodes on the host
// network against its PostgreSQL, and each node's config passes
// `traverse validate` with the environment Compose gives it.
func TestCompose(t *testing.T) {
	var c struct {
		Services map[string]struct {
			NetworkMode string            `yaml:"network_mode"`
			Environment map[string]string `yaml:"environment"`
			Configs     []struct {
				Source string `yaml:"source"`
				Target string `yaml:"target"`
			} `yaml:"configs"`
			Volumes []string `yaml:"volumes"`
		} `yaml:"services"`
		Configs map[string]struct {
			Content string `yaml:"content"`
		} `yaml:"configs"`
	}
	if err := yaml.Unmarshal([]byte(read(t, "docker-compose.yml")), &c); err != nil {
		t.Fatal(err)
	}
	pg, ok := c.Services["postgres"]
	if !ok {
		t.Fatal("no postgres service")
	}
	dsn := fmt.Sprintf("postgres://%s:%s@127.0.0.1:5432/%s", pg.Environment["POSTGRES_USER"], pg.Environment["POSTGRES_PASSWORD"], pg.Environment["POSTGRES_DB"])
	nodes := 0
	seen := map[string]string{}
	for name, svc := range c.Services {
		if !strings.HasPrefix(name, "traverse") {
			continue
		}
		nodes++
		if svc.NetworkMode != "host" {
			t.Errorf("%s: network_mode %q, want host", name, svc.NetworkMode)
		}
		if len(svc.Configs) != 1 || svc.Configs[0].Target != "/etc/traverse/traverse.yaml" {
			t.Fatalf("%s: configs %+v", name, svc.Configs)
		}
		if len(svc.Volumes) != 1 || !strings.HasSuffix(svc.Volumes[0], ":/var/lib/traverse") {
			t.Errorf("%s: volumes %v", name, svc.Volumes)
		}
		body := c.Configs[svc.Configs[0].Source].Content
		if !strings.Contains(body, dsn) {
			t.Errorf("%s: config does not use the postgres service's %s", name, dsn)
		}
		path := filepath.Join(t.TempDir(), "traverse.yaml")
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(binary, "validate", "-c", path)
		cmd.Env = append(os.Environ(), config.EnvSecrets+"=compose-trial-secret-0123456789")
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "config ok") {
			t.Errorf("%s: traverse validate: %v\n%s", name, err, out)
		}
		// Two nodes on one host must not share a port.
		cfg, err := config.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range append(append(cfg.Listen.UDP, cfg.Listen.TCP...), cfg.Issuer.Listen, cfg.Metrics.Listen,
			fmt.Sprintf("relay %d", cfg.Relay.Ports.Min)) {
			key := a
			if slices.Contains(cfg.Listen.UDP, a) {
				key = "udp " + a
			}
			if other, dup := seen[key]; dup && other != name {
				t.Errorf("%s and %s both use %s", other, name, a)
			}
			seen[key] = name
		}
	}
	if nodes != 2 {
		t.Fatalf("%d traverse services, want 2", nodes)
	}
}

// TestREADMEPublicVM: the README's "Run it on a public VM" is ten lines or
// fewer, installs the files this directory ships, and its config (with the
// generated secret filled in) passes `traverse validate`.
func TestREADMEPublicVM(t *testing.T) {
	readme := read(t, "../README.md")
	_, section, ok := strings.Cut(readme, "## Run it on a public VM\n")
	if !ok {
		t.Fatal("README has no \"Run it on a public VM\" section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	_, block, ok := strings.Cut(section, "```sh\n")
	if !ok {
		t.Fatal("no sh block in the section")
	}
	block, _, _ = strings.Cut(block, "```")
	lines := strings.Split(strings.TrimSpace(block), "\n")
	if len(lines) > 10 {
		t.Fatalf("%d lines, want ten or fewer", len(lines))
	}
	for _, f := range []string{"packaging/systemd/traverse.service", "packaging/systemd/traverse-sysusers.conf"} {
		if !strings.Contains(block, f) {
			t.Errorf("the steps do not install %s", f)
		}
		if _, err := os.Stat("../" + f); err != nil {
			t.Error(err)
		}
	}
	for _, step := range []string{"systemctl enable --now traverse", "traverse doctor -c /etc/traverse/traverse.yaml"} {
		if !strings.Contains(block, step) {
			t.Errorf("no step %q", step)
		}
	}
	_, conf, ok := strings.Cut(block, "<<EOF\n")
	if !ok {
		t.Fatal("no config heredoc")
	}
	conf, _, _ = strings.Cut(conf, "\nEOF")
	conf = regexp.MustCompile(`\$\([^)]*\)`).ReplaceAllString(conf, "Zm9vYmFyYmF6cXV1eHNlY3JldHNlY3JldA==")
	for _, want := range []string{"public_ip: auto", "acme:"} {
		if !strings.Contains(conf, want) {
			t.Errorf("config lacks %q", want)
		}
	}
	path := filepath.Join(t.TempDir(), "traverse.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(binary, "validate", "-c", path).CombinedOutput(); err != nil {
		t.Fatalf("traverse validate: %v\n%s\n%s", err, out, conf)
	}
}
