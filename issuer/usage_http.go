package issuer

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// This file serves the Usage Records and live-control routes: thin
// handlers over usage.go and sessions.go. They authenticate as the Tokens
// resource does: Basic with the account's auth token (which also acts on its
// subaccounts) or one of its API keys.

// serveUsage answers GET …/Usage/Records[.json] and …/Usage/Records/{Sub}.json.
func (s *Service) serveUsage(w http.ResponseWriter, r *http.Request) error {
	p, err := s.authorize(r)
	if err != nil {
		return err
	}
	if err := parseForm(r); err != nil {
		return err
	}
	q := UsageQuery{IncludeSubaccounts: true}
	if sub := r.PathValue("Sub"); sub != "" {
		q.Subresource = strings.TrimSuffix(sub, ".json")
		if !slices.Contains(usageSubresources, q.Subresource) {
			return ErrNotFound
		}
	}
	q.Category, q.StartDate, q.EndDate = r.Form.Get("Category"), r.Form.Get("StartDate"), r.Form.Get("EndDate")
	if v := r.Form.Get("IncludeSubaccounts"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return &ParamError{Param: "IncludeSubaccounts", Message: "Invalid IncludeSubaccounts: must be true or false"}
		}
		q.IncludeSubaccounts = b
	}
	if q.Page, q.PageSize, err = ParsePaging(r.Form.Get("Page"), r.Form.Get("PageSize")); err != nil {
		return err
	}
	if tok := r.Form.Get("PageToken"); tok != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(tok, "PA"))
		if err != nil || !strings.HasPrefix(tok, "PA") || n < 0 || n > 1_000_000 {
			return &ParamError{Param: "PageToken", Message: "Invalid PageToken"}
		}
		q.Page = n
	}
	list, err := s.UsageRecords(r.Context(), p.Account, q)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, list)
}

// serveAllocations answers GET /v1/Accounts/{AccountSid}/Allocations[.json].
func (s *Service) serveAllocations(w http.ResponseWriter, r *http.Request) error {
	p, err := s.authorize(r)
	if err != nil {
		return err
	}
	live, err := s.Allocations(r.Context(), p.Account.Sid)
	if err != nil {
		return err
	}
	l := AllocationList{Allocations: make([]AllocationResource, 0, len(live)), URI: AllocationsPath(p.Account.Sid) + ".json"}
	for _, a := range live {
		l.Allocations = append(l.Allocations, NewAllocationResource(p.Account.Sid, a))
	}
	return writeJSON(w, http.StatusOK, l)
}

// serveAllocation answers DELETE /v1/Accounts/{AccountSid}/Allocations/{Sid}[.json] (204).
func (s *Service) serveAllocation(w http.ResponseWriter, r *http.Request) error {
	p, err := s.authorize(r)
	if err != nil {
		return err
	}
	if err := s.KillAllocation(r.Context(), p.Account.Sid, strings.TrimSuffix(r.PathValue("Sid"), ".json")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// serveRevoke answers POST /v1/Accounts/{AccountSid}/Credentials/{Username}/revoke (204).
func (s *Service) serveRevoke(w http.ResponseWriter, r *http.Request) error {
	p, err := s.authorize(r)
	if err != nil {
		return err
	}
	if err := s.RevokeCredential(r.Context(), p.Account.Sid, r.PathValue("Username")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
