package pgtest_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/traverse/traverse/internal/pgtest"
)

// TestCluster starts a cluster, connects over TCP with the password, and
// checks that Stop removes everything it made.
func TestCluster(t *testing.T) {
	c, err := pgtest.New()
	if err != nil {
		t.Fatal(err)
	}
	dsn := c.NewDatabase(t)
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		c.Stop()
		t.Fatal(err)
	}
	var one int
	if err := conn.QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Errorf("SELECT 1: %d %v", one, err)
	}
	conn.Close(context.Background())
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(os.TempDir(), "traverse-pgtest-*")); len(left) > 0 {
		t.Logf("left over (maybe another test's): %v", left)
	}
	if _, err := pgx.Connect(context.Background(), dsn); err == nil {
		t.Fatal("server still answers after Stop")
	}
}
