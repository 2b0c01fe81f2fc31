package storetest

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/traverse/traverse/store"
)

// Node returns a test node with ID id, serving, beaten at t0.
func Node(id string) store.Node {
	return store.Node{
		ID:                 id,
		PublicHost:         "relay-" + id + ".example",
		URIs:               []string{"stun:relay-" + id + ".example:3478", "turn:relay-" + id + ".example:3478?transport=udp"},
		Region:             "eu-west",
		Weight:             2,
		Allocations:        3,
		BitsPerSecond:      4_000_000,
		SecretFingerprints: []string{"fp-mint", "fp-old"},
		State:              store.NodeServing,
		Started:            t0,
		LastHeartbeat:      t0,
	}
}

func testNodes(t *testing.T, s store.Store) {
	defer s.Close()
	ctx := context.Background()
	v0, err := s.NodesVersion(ctx)
	must(t, err)
	if nodes, err := s.ListNodes(ctx); err != nil || len(nodes) != 0 {
		t.Fatalf("empty store: ListNodes = %v, %v", nodes, err)
	}
	a, b := Node("a"), Node("b")
	b.Region, b.URIs, b.SecretFingerprints = "", nil, nil
	must(t, s.SaveNode(ctx, b))
	must(t, s.SaveNode(ctx, a))
	v1, err := s.NodesVersion(ctx)
	must(t, err)
	if v1 == v0 {
		t.Fatal("SaveNode did not change NodesVersion")
	}
	nodes, err := s.ListNodes(ctx)
	must(t, err)
	b.URIs, b.SecretFingerprints = []string{}, []string{}
	if want := []store.Node{a, b}; !reflect.DeepEqual(nodes, want) {
		t.Fatalf("ListNodes:\n got %+v\nwant %+v", nodes, want)
	}

	// A heartbeat updates the load and keeps the state; it is not a state change.
	must(t, s.SetNodeState(ctx, "a", store.NodeDraining))
	v2, _ := s.NodesVersion(ctx)
	if v2 == v1 {
		t.Fatal("SetNodeState did not change NodesVersion")
	}
	beat := a
	beat.Allocations, beat.LastHeartbeat, beat.State = 7, t0.Add(5*time.Second), store.NodeServing
	state, err := s.BeatNode(ctx, beat)
	must(t, err)
	if state != store.NodeDraining {
		t.Fatalf("BeatNode returned state %q, want draining", state)
	}
	if v3, _ := s.NodesVersion(ctx); v3 != v2 {
		t.Fatalf("BeatNode changed NodesVersion %d -> %d", v2, v3)
	}
	nodes, err = s.ListNodes(ctx)
	must(t, err)
	if got := nodes[0]; got.Allocations != 7 || !got.LastHeartbeat.Equal(beat.LastHeartbeat) || got.State != store.NodeDraining {
		t.Fatalf("after BeatNode: %+v", got)
	}

	// Registration replaces the row, state included.
	must(t, s.SaveNode(ctx, a))
	nodes, _ = s.ListNodes(ctx)
	if nodes[0].State != store.NodeServing || nodes[0].Allocations != a.Allocations {
		t.Fatalf("after SaveNode: %+v", nodes[0])
	}
	if _, err := s.BeatNode(ctx, Node("nope")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("BeatNode of an unknown node: %v, want ErrNotFound", err)
	}
	if err := s.SetNodeState(ctx, "nope", store.NodeDraining); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("SetNodeState of an unknown node: %v, want ErrNotFound", err)
	}
}
