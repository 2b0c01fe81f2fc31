package server

import (
	"context"
	"fmt"
	"strings"

	"go.uber.org/zap"

	"github.com/traverse/traverse/config"
	"github.com/traverse/traverse/publicip"
)

// detectPublicIP resolves relay.public_ip: auto with the configured STUN
// servers, logs the address and its source, and remembers the source for
// the start-up line.
func (s *Server) detectPublicIP(ctx context.Context, r config.Relay) (string, error) {
	ip, answers, err := publicip.Detect(ctx, r.BindIP, r.PublicIPSTUN, s.stunTimeout)
	if err != nil {
		return "", fmt.Errorf("relay.public_ip: auto: %w", err)
	}
	for _, a := range answers {
		if a.Err != nil {
			s.log.Warn("stun server did not answer", zap.String("server", a.Server), zap.Error(a.Err))
		}
	}
	src := "stun " + strings.Join(publicip.Answered(answers), ", ")
	s.ipSource.Store(&src)
	s.log.Info("public ip detected", zap.String("relay_ip", ip.String()), zap.String("source", src))
	return ip.String(), nil
}

// publicIPSource says where the advertised relay address comes from.
func (s *Server) publicIPSource(cfg config.Relay) string {
	if p := s.ipSource.Load(); p != nil {
		return *p
	}
	if cfg.PublicIP != "" {
		return "relay.public_ip"
	}
	if cfg.BindIP != "0.0.0.0" {
		return "relay.bind_ip"
	}
	return "host interface (set relay.public_ip when behind NAT)"
}
