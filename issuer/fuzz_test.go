package issuer_test

import (
	"encoding/json"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/traverse/traverse/issuer"
)

func FuzzParseTTL(f *testing.F) {
	for _, s := range []string{"", "1", "86400", "86401", "0", "-1", "abc", "+5", "1e3", "٣"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := issuer.ParseTTL(s)
		if err == nil && (d < issuer.MinTTL || d > issuer.MaxTTL) {
			t.Fatalf("ParseTTL(%q) = %s, outside the bounds", s, d)
		}
	})
}

// FuzzTokensHandler sends arbitrary credentials, bodies and paths through the
// handler: the answer is never a 5xx and always a token or Twilio's error JSON.
func FuzzTokensHandler(f *testing.F) {
	fx := newFixture(f)
	a := fx.acct
	h := fx.svc.Handler()
	f.Add(a.Sid, a.AuthToken, "Ttl=3600", a.Sid)
	f.Add(a.Sid, a.AuthToken, "Ttl=%zz", a.Sid)
	f.Add(a.Sid, "x", "", a.Sid)
	f.Add("", "", "Ttl=1&Ttl=2", "AC")
	f.Fuzz(func(t *testing.T, user, pass, body, pathSid string) {
		req := httptest.NewRequest("POST", "/2010-04-01/Accounts/"+url.PathEscape(pathSid)+"/Tokens.json", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(user, pass)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
		var v map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
			t.Fatalf("status %d, body not JSON: %q", w.Code, w.Body)
		}
		if w.Code != 201 && (v["code"] == nil || v["status"] != float64(w.Code)) {
			t.Fatalf("status %d, body %s", w.Code, w.Body)
		}
	})
}

// FuzzUsageRecordsHandler sends arbitrary subresources and queries to the
// Usage Records: the answer is a usage list or Twilio's error JSON, never a
// 5xx, and no range runs away.
func FuzzUsageRecordsHandler(f *testing.F) {
	fx := newFixture(f)
	a := fx.acct
	h := fx.svc.Handler()
	for _, seed := range [][2]string{
		{"", "Category=turnmegabytes&StartDate=-30days"},
		{"/Daily", "StartDate=2020-01-01&EndDate=2020-02-01&PageSize=5&Page=3"},
		{"/Monthly", "StartDate=-99999years"},
		{"/Yearly", "EndDate=%2B99999years"},
		{"/Today", "PageToken=PA2"},
		{"/Nope", "IncludeSubaccounts=false"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, sub, query string) {
		req := httptest.NewRequest("GET", "/2010-04-01/Accounts/"+a.Sid+"/Usage/Records"+url.PathEscape(sub)+".json", nil)
		req.URL.RawQuery = query
		req.SetBasicAuth(a.Sid, a.AuthToken)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
		var v map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
			t.Fatalf("status %d, body not JSON: %q", w.Code, w.Body)
		}
		if w.Code == 200 && v["usage_records"] == nil {
			t.Fatalf("200 without usage_records: %s", w.Body)
		}
	})
}
