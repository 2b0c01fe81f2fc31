package postgres_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/traverse/traverse/internal/pgtest"
	"github.com/traverse/traverse/store"
	"github.com/traverse/traverse/store/postgres"
	"github.com/traverse/traverse/store/storetest"
)

var testKey = bytes.Repeat([]byte{7}, 32)

// cluster is the throwaway PostgreSQL server every test of the package uses;
// each test makes its own database in it.
var cluster *pgtest.Cluster

func TestMain(m *testing.M) {
	c, err := pgtest.New()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		os.Exit(1)
	}
	cluster = c
	code := m.Run()
	// Every test closed its stores: no pool goroutine may outlive them.
	if err := goleak.Find(); err != nil && code == 0 {
		fmt.Fprintln(os.Stderr, "FAIL: leaked goroutines:", err)
		code = 1
	}
	if err := c.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	os.Exit(code)
}

// openNew opens a store on a new, empty database and returns it with the DSN.
func openNew(t *testing.T) (*postgres.Store, string) {
	t.Helper()
	dsn := cluster.NewDatabase(t)
	return open(t, dsn, testKey), dsn
}

// open opens a store on dsn and closes it at the end of the test.
func open(t *testing.T, dsn string, key []byte) *postgres.Store {
	t.Helper()
	s, err := postgres.Connect(context.Background(), dsn, key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// raw connects to dsn without the store, to look at what it wrote.
func raw(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, _ := openNew(t)
		return s
	})
}

// TestOpenThroughStoreOpen: both URL schemes reach this backend through
// store.Open once the package is linked in.
func TestOpenThroughStoreOpen(t *testing.T) {
	ctx := context.Background()
	dsn := cluster.NewDatabase(t)
	for _, d := range []string{dsn, "postgresql://" + strings.TrimPrefix(dsn, "postgres://")} {
		s, err := store.Open(ctx, d, testKey)
		if err != nil {
			t.Fatalf("%s: %v", strings.SplitN(d, ":", 2)[0], err)
		}
		if _, ok := s.(*postgres.Store); !ok {
			t.Fatalf("store.Open gave %T", s)
		}
		must(t, s.Close())
	}
	s, err := store.OpenConfigured(ctx, t.TempDir(), dsn, hex.EncodeToString(testKey))
	must(t, err)
	must(t, s.Close())
}

// TestMigrations migrates an empty database, then reopens the migrated one
// holding data: each version is recorded once and the data survives.
func TestMigrations(t *testing.T) {
	ctx := context.Background()
	s, dsn := openNew(t)
	db := raw(t, dsn)
	versions := func() (n, max int) {
		t.Helper()
		must(t, db.QueryRow(ctx, `SELECT COUNT(*), COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&n, &max))
		return n, max
	}
	if n, max := versions(); n != postgres.SchemaVersion || max != postgres.SchemaVersion {
		t.Fatalf("empty database: schema_migrations has %d rows up to %d, want %d", n, max, postgres.SchemaVersion)
	}
	a := storetest.Account(1, "")
	k := storetest.Key(1, a.Sid)
	must(t, s.CreateAccount(ctx, a))
	must(t, s.CreateKey(ctx, k))
	s.Close()

	for i := 0; i < 2; i++ {
		s := open(t, dsn, testKey)
		if got, err := s.GetAccount(ctx, a.Sid); err != nil || got != a {
			t.Fatalf("account after reopen: %+v, %v", got, err)
		}
		if got, err := s.GetKey(ctx, k.Sid); err != nil || got != k {
			t.Fatalf("key after reopen: %+v, %v", got, err)
		}
		s.Close()
	}
	if n, max := versions(); n != postgres.SchemaVersion || max != postgres.SchemaVersion {
		t.Fatalf("after reopening: schema_migrations has %d rows up to %d, want %d", n, max, postgres.SchemaVersion)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	s, dsn := openNew(t)
	s.Close()
	_, err := raw(t, dsn).Exec(context.Background(), `INSERT INTO schema_migrations (version) VALUES (999)`)
	must(t, err)
	if _, err := postgres.Connect(context.Background(), dsn, testKey); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("opened a database from a newer build: %v", err)
	}
}

// TestConcurrentOpen starts several nodes on one new database at once: the
// advisory lock serialises the migrations, and each runs once.
func TestConcurrentOpen(t *testing.T) {
	dsn := cluster.NewDatabase(t)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			s, err := postgres.Connect(context.Background(), dsn, testKey)
			if err != nil {
				t.Error(err)
				return
			}
			s.Close()
		}()
	}
	close(start)
	wg.Wait()
	var n int
	must(t, raw(t, dsn).QueryRow(context.Background(), `SELECT COUNT(*) FROM schema_migrations`).Scan(&n))
	if n != postgres.SchemaVersion {
		t.Fatalf("schema_migrations has %d rows, want %d", n, postgres.SchemaVersion)
	}
}

// TestTwoNodes: two stores (two nodes' pools) on one database. A key deleted
// and an account suspended through one are seen through the other on the
// very next call: nothing is cached.
func TestTwoNodes(t *testing.T) {
	ctx := context.Background()
	a1, dsn := openNew(t)
	b1 := open(t, dsn, testKey)
	a := storetest.Account(1, "")
	k := storetest.Key(1, a.Sid)
	must(t, a1.CreateAccount(ctx, a))
	must(t, b1.CreateKey(ctx, k))
	if got, err := a1.GetKey(ctx, k.Sid); err != nil || got != k {
		t.Fatalf("node A reads node B's key: %+v, %v", got, err)
	}
	must(t, b1.DeleteKey(ctx, a.Sid, k.Sid))
	if _, err := a1.GetKey(ctx, k.Sid); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("node A after node B deleted the key: got %v, want ErrNotFound", err)
	}
	a.Status = store.StatusSuspended
	must(t, b1.UpdateAccount(ctx, a))
	if got, err := a1.GetAccount(ctx, a.Sid); err != nil || got.Status != store.StatusSuspended {
		t.Fatalf("node A after node B suspended the account: %+v, %v", got, err)
	}
}

// TestConcurrentFirstStart: several nodes start on an empty database at once
// and each tries to create the primary account; exactly one does, every time.
func TestConcurrentFirstStart(t *testing.T) {
	ctx := context.Background()
	const nodes = 6
	for round := 0; round < 3; round++ {
		dsn := cluster.NewDatabase(t)
		stores := make([]*postgres.Store, nodes)
		for i := range stores {
			stores[i] = open(t, dsn, testKey)
		}
		start := make(chan struct{})
		created := make(chan bool, nodes)
		var wg sync.WaitGroup
		for i, s := range stores {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				ok, err := s.CreateFirstAccount(ctx, storetest.Account(i+1, ""))
				if err != nil {
					t.Error(err)
				}
				created <- ok
			}()
		}
		close(start)
		wg.Wait()
		close(created)
		n := 0
		for ok := range created {
			if ok {
				n++
			}
		}
		list, err := stores[0].ListAccounts(ctx)
		must(t, err)
		if n != 1 || len(list) != 1 {
			t.Fatalf("round %d: %d nodes created, %d accounts; want exactly 1", round, n, len(list))
		}
		for _, s := range stores {
			s.Close()
		}
	}
}

func TestWrongKeyRefused(t *testing.T) {
	s, dsn := openNew(t)
	must(t, s.CreateAccount(context.Background(), storetest.Account(1, "")))
	s.Close()
	_, err := postgres.Connect(context.Background(), dsn, bytes.Repeat([]byte{8}, 32))
	if !errors.Is(err, store.ErrWrongKey) {
		t.Fatalf("open with another key: got %v, want ErrWrongKey", err)
	}
	// The right key still opens it: the refusal changed nothing.
	open(t, dsn, testKey)
}

// TestNoSecretInClearText writes secrets and reads every column of every
// table back raw: no secret may appear, neither as bytes nor hex-encoded.
func TestNoSecretInClearText(t *testing.T) {
	ctx := context.Background()
	s, dsn := openNew(t)
	a := storetest.Account(1, "")
	k := storetest.Key(1, a.Sid)
	must(t, s.CreateAccount(ctx, a))
	must(t, s.CreateKey(ctx, k))
	rotated := a
	rotated.AuthToken = "0123456789abcdef0123456789abcdef"
	must(t, s.UpdateAccount(ctx, rotated))
	secrets := []string{a.AuthToken, rotated.AuthToken, k.Secret}

	db := raw(t, dsn)
	var dump bytes.Buffer
	for _, table := range []string{"accounts", "api_keys", "store_meta", "schema_migrations"} {
		rows, err := db.Query(ctx, `SELECT * FROM `+table)
		must(t, err)
		for rows.Next() {
			vals, err := rows.Values()
			must(t, err)
			for _, v := range vals {
				if b, ok := v.([]byte); ok {
					dump.Write(b)
				} else {
					fmt.Fprint(&dump, v)
				}
				dump.WriteByte('\n')
			}
		}
		must(t, rows.Err())
		// The text form of each row too (bytea as \x…), as psql would show it.
		rows, err = db.Query(ctx, `SELECT t::text FROM `+table+` t`)
		must(t, err)
		texts, err := pgx.CollectRows(rows, pgx.RowTo[string])
		must(t, err)
		dump.WriteString(strings.Join(texts, "\n"))
	}
	for _, secret := range secrets {
		if bytes.Contains(dump.Bytes(), []byte(secret)) || bytes.Contains(dump.Bytes(), []byte(hex.EncodeToString([]byte(secret)))) {
			t.Errorf("a secret is in clear text in the tables")
		}
	}
	if !bytes.Contains(dump.Bytes(), []byte(a.Sid)) || !bytes.Contains(dump.Bytes(), []byte(k.Sid)) {
		t.Fatal("the dump does not even hold the SIDs; the grep proves nothing")
	}
}

// TestDSNPasswordNotInErrors: neither a refused login nor an unparsable DSN
// puts the password in the error.
func TestDSNPasswordNotInErrors(t *testing.T) {
	const pw = "hunter2-not-the-password"
	u, err := url.Parse(cluster.NewDatabase(t))
	must(t, err)
	u.User = url.UserPassword(pgtest.Superuser, pw)
	bad := []string{
		u.String(),
		"postgres://traverse:" + pw + "@127.0.0.1:notaport/db",
		"postgres://traverse:" + pw + "@127.0.0.1/db?sslmode=bogus",
	}
	for i, dsn := range bad {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := postgres.Connect(ctx, dsn, testKey)
		cancel()
		if err == nil {
			t.Fatalf("DSN %d opened", i)
		}
		if strings.Contains(err.Error(), pw) {
			t.Errorf("DSN %d: the error shows the password: %v", i, err)
		}
	}
}

// TestContext: every call takes its context; a cancelled one fails the call.
func TestContext(t *testing.T) {
	s, _ := openNew(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.GetKey(ctx, storetest.Key(1, "").Sid); !errors.Is(err, context.Canceled) {
		t.Fatalf("GetKey with a cancelled context: got %v", err)
	}
	if err := s.CreateAccount(ctx, storetest.Account(1, "")); err == nil {
		t.Fatal("CreateAccount with a cancelled context succeeded")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
