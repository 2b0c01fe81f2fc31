package relay

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/pion/stun/v3"
	"github.com/pion/turn/v4"
	"go.uber.org/zap"

	"github.com/traverse/traverse/auth"
)

// authenticate is pion's AuthHandler. pion calls it for Allocate and again
// for every Refresh, CreatePermission and ChannelBind; it returns the
// long-term key and pion checks MESSAGE-INTEGRITY with it.
//
// Beyond the credential format it enforces two things pion v4 leaves out:
// a request on an existing allocation must carry the username that created
// it, and (unless auth.strict_expiry) an expired TURN REST username is still
// good for the allocation it created, so a live call is not dropped at expiry.
func (s *Server) authenticate(username, realm string, src net.Addr) ([]byte, bool) {
	st := s.state.Load()
	key := srcKey(src)
	if realm != s.realm {
		s.refuse(AuthWrongRealm, src)
		s.signed.take(key, username)
		return nil, false
	}
	if s.isRevoked(username) {
		s.refuse(AuthRevoked, src)
		s.signed.take(key, username)
		return nil, false
	}
	live, hasLive := s.allocs.get(key)
	if hasLive && live.username != username {
		s.refuse(AuthOwnerMismatch, src)
		s.signed.take(key, username)
		return nil, false
	}

	if k, ok := st.userKeys[username]; ok {
		s.signed.take(key, username)
		return k, true
	}

	_, _, err := auth.CheckUsername(username, s.now(), st.policy)
	if err != nil {
		grace := errors.Is(err, auth.ErrExpired) && hasLive && !st.strictExpiry
		if !grace {
			s.refuse(reasonOf(err), src)
			s.signed.take(key, username)
			return nil, false
		}
	}
	if st.secrets.Len() == 0 {
		s.refuse(AuthUnknownUser, src)
		return nil, false
	}
	var msg *stun.Message
	if st.secrets.Len() > 1 {
		msg = s.signed.take(key, username)
	}
	return selectKey(username, realm, st.secrets.Passwords(username), msg), true
}

// refuse counts a refusal; the details go to debug only, because anyone can
// send a bad credential and must not be able to fill the logs.
func (s *Server) refuse(reason string, src net.Addr) {
	s.metrics.auth.WithLabelValues(reason).Inc()
	s.refusals.mark(srcKey(src), reason == AuthOwnerMismatch, time.Now())
	if ce := s.log.Check(zap.DebugLevel, "auth refused"); ce != nil {
		ce.Write(zap.String("reason", reason), zap.Stringer("client", src))
	}
}

func reasonOf(err error) string {
	switch {
	case errors.Is(err, auth.ErrExpired):
		return AuthExpired
	case errors.Is(err, auth.ErrTooFarFuture):
		return AuthTooFarFuture
	case errors.Is(err, auth.ErrMalformed):
		return AuthMalformed
	}
	return AuthUnknownUser
}

// onAuth is pion's verdict after the MESSAGE-INTEGRITY check: a false here
// means the password was wrong.
func (s *Server) onAuth(src, _ net.Addr, _, _, _ string, _ string, verdict bool) {
	if verdict {
		s.metrics.authOK.Inc()
		return
	}
	s.refuse(AuthBadPassword, src)
}

// quota is pion's QuotaHandler, asked before an allocation is made.
func (s *Server) quota(username, _ string, _ net.Addr) bool {
	st := s.state.Load()
	switch {
	case s.draining.Load():
		s.metrics.quotaRejected.WithLabelValues("draining").Inc()
		return false
	case st.quotaTotal > 0 && s.allocs.len() >= st.quotaTotal:
		s.metrics.quotaRejected.WithLabelValues("total").Inc()
		return false
	case st.quotaPerUser > 0 && s.allocs.countUser(quotaKey(username, st)) >= st.quotaPerUser:
		s.metrics.quotaRejected.WithLabelValues("per_user").Inc()
		return false
	}
	return true
}

// quotaKey is the user a per-user quota counts: the part of a TURN REST
// username after the expiry (so minting fresh credentials does not escape
// it), or a static user's name. The issuer's client-side credentials name
// "<AccountSid>:<identity>:<random>": their user is the account's identity,
// so the random part is dropped. A Tokens-resource credential,
// "<AccountSid>:<random>", names no end user and counts on its own.
func quotaKey(username string, st *state) string {
	if _, ok := st.userKeys[username]; ok {
		return username
	}
	_, user, err := auth.ParseUsername(username)
	if err != nil {
		return username
	}
	if strings.Count(user, ":") == 2 && strings.HasPrefix(user, "AC") {
		return user[:strings.LastIndexByte(user, ':')]
	}
	return user
}

// permit is pion's PermissionHandler for CreatePermission and ChannelBind.
func (s *Server) permit(_ net.Addr, peer net.IP) bool {
	ip, ok := netip.AddrFromSlice(peer)
	if !ok {
		s.metrics.peerDenied.WithLabelValues(DenyBuiltin).Inc()
		return false
	}
	allowed, why := s.state.Load().peers.AllowIP(ip)
	if !allowed {
		s.metrics.peerDenied.WithLabelValues(why).Inc()
		if ce := s.log.Check(zap.DebugLevel, "peer denied"); ce != nil {
			ce.Write(zap.String("peer", ip.String()), zap.String("reason", why))
		}
	}
	return allowed
}

var _ turn.AuthHandler = (*Server)(nil).authenticate
