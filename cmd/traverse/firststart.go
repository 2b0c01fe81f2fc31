package main

import (
	"context"
	"fmt"
	"io"

	"github.com/traverse/traverse/config"
	"github.com/traverse/traverse/issuer"
	"github.com/traverse/traverse/server"
)

// printFirstStart creates the primary account when the store is empty and
// prints its SID and auth token once, with a ready curl line. It writes to
// stdout, never to the log.
func printFirstStart(ctx context.Context, w io.Writer, srv *server.Server, cfg config.Config) error {
	svc := srv.Issuer()
	if svc == nil {
		return nil
	}
	acct, created, err := svc.EnsurePrimaryAccount(ctx)
	if err != nil || !created {
		return err
	}
	scheme := "http"
	if cfg.TLS.Enabled() {
		scheme = "https"
	}
	fmt.Fprint(w, issuer.FirstStartMessage(acct, scheme+"://"+srv.IssuerAddr().String()))
	return nil
}
