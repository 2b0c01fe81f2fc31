package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/traverse/traverse/config"
	"github.com/traverse/traverse/fleet"
	"github.com/traverse/traverse/store"
)

// nodeJSON is one node as `traverse nodes list --json` prints it.
type nodeJSON struct {
	ID            string    `json:"id"`
	Status        string    `json:"status"`
	Region        string    `json:"region"`
	Weight        int       `json:"weight"`
	PublicHost    string    `json:"public_host"`
	URIs          []string  `json:"uris"`
	Allocations   int       `json:"allocations"`
	BitsPerSecond int64     `json:"bits_per_second"`
	Started       time.Time `json:"started"`
	LastHeartbeat time.Time `json:"last_heartbeat"`
}

// newNodesCmd is "traverse nodes": the fleet registry in the store.
func newNodesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "nodes",
		Short: "List the fleet's relay nodes; drain or undrain one",
	}
	cmd.AddCommand(newNodesListCmd(), newNodesStateCmd("drain", store.NodeDraining,
		"Mark a node draining: once this returns, no issuer hands it out (its allocations keep running)"),
		newNodesStateCmd("undrain", store.NodeServing, "Mark a drained node serving again"))
	return cmd
}

func newNodesListCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List every registered node with its status (serving, draining, down), region and load",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withStore(cmd, func(ctx context.Context, cfg config.Config, st store.Store) error {
				nodes, err := st.ListNodes(ctx)
				if err != nil {
					return err
				}
				info := fleet.Describe(nodes, cfg.Node.Heartbeat, time.Now())
				if asJSON {
					out := make([]nodeJSON, 0, len(info))
					for _, n := range info {
						out = append(out, nodeJSON{ID: n.ID, Status: string(n.Status), Region: n.Region, Weight: n.Weight,
							PublicHost: n.PublicHost, URIs: n.URIs, Allocations: n.Allocations, BitsPerSecond: n.BitsPerSecond,
							Started: n.Started, LastHeartbeat: n.LastHeartbeat})
					}
					return printJSON(cmd.OutOrStdout(), out)
				}
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "ID\tSTATUS\tREGION\tWEIGHT\tHOST\tALLOCATIONS\tMBIT/S\tLAST HEARTBEAT")
				for _, n := range info {
					region := n.Region
					if region == "" {
						region = "-"
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%d\t%.1f\t%s ago\n", n.ID, n.Status, region, n.Weight, n.PublicHost,
						n.Allocations, float64(n.BitsPerSecond)/1e6, time.Since(n.LastHeartbeat).Round(time.Second))
				}
				return w.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	return cmd
}

func newNodesStateCmd(verb string, state store.NodeState, short string) *cobra.Command {
	return &cobra.Command{
		Use:   verb + " NODE",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := strings.TrimSpace(args[0])
			if !fleet.ValidID(id) {
				return &exitError{2, fmt.Errorf("%q is not a node id (see traverse nodes list)", args[0])}
			}
			return withStore(cmd, func(ctx context.Context, _ config.Config, st store.Store) error {
				if err := st.SetNodeState(ctx, id, state); err != nil {
					return notFound(err, "node", id)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "node %s: %s\n", id, state)
				return nil
			})
		},
	}
}
