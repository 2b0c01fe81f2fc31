package fleet_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/traverse/traverse/fleet"
)

// BenchmarkChoose is the fleet's cost per credential on SQLite: the fleet
// version read and the choice, for fleets of 3 and 300 nodes.
func BenchmarkChoose(b *testing.B) {
	for _, size := range []int{3, 300} {
		b.Run(fmt.Sprintf("nodes=%d", size), func(b *testing.B) {
			st := openStore(&testing.T{})
			defer st.Close()
			now := time.Now()
			for i := 0; i < size; i++ {
				if err := st.SaveNode(context.Background(), node(fmt.Sprintf("n%03d", i), "", 1+i%3, now)); err != nil {
					b.Fatal(err)
				}
			}
			v, err := fleet.NewView(fleet.ViewOptions{Store: st, Heartbeat: time.Hour})
			if err != nil {
				b.Fatal(err)
			}
			if err := v.Refresh(context.Background()); err != nil {
				b.Fatal(err)
			}
			client := netip.MustParseAddr("198.51.100.1")
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if len(v.Choose(client)) != 1 {
					b.Fatal("no node chosen")
				}
			}
		})
	}
}
