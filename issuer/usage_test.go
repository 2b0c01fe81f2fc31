package issuer_test

import (
	"encoding/json"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	openapi "github.com/twilio/twilio-go/rest/api/v2010"

	"github.com/traverse/traverse/auth"
	"github.com/traverse/traverse/store"
)

// usageFixture stores known usage for the primary account (2.001 MB on
// t0's day, 0.001 of it from region eu) and a subaccount (0.25 MB the day
// after), with the clock two days past t0.
func usageFixture(t *testing.T) (*fixture, store.Account) {
	f := newFixture(t)
	sub, err := f.svc.CreateAccount(t.Context(), "sub", f.acct.Sid)
	if err != nil {
		t.Fatal(err)
	}
	h := t0.Truncate(time.Hour)
	if err := f.store.AddUsage(t.Context(), []store.UsageRow{
		{AccountSid: f.acct.Sid, Hour: h, BytesSent: 1_500_000, BytesReceived: 500_000, PacketsSent: 1500, PacketsReceived: 500},
		{AccountSid: f.acct.Sid, Region: "eu", Hour: h, BytesSent: 600, BytesReceived: 400},
		{AccountSid: sub.Sid, Hour: h.Add(24 * time.Hour), BytesSent: 250_000},
	}); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(48 * time.Hour)
	return f, sub
}

// TestTwilioGoUsageRecords: twilio-go's ListUsageRecord and
// ListUsageRecordDaily read traverse's usage unchanged, following
// next_page_uri page by page; the megabytes are the stored bytes / 10^6.
func TestTwilioGoUsageRecords(t *testing.T) {
	f, _ := usageFixture(t)
	api := f.twilioClient(t, f.acct.Sid, f.acct.AuthToken, f.acct.Sid).Api
	day := func(d int) string { return t0.AddDate(0, 0, d).Format("2006-01-02") }

	recs, err := api.ListUsageRecord(&openapi.ListUsageRecordParams{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range recs {
		got[deref(r.Category)] = deref(r.Usage)
		if deref(r.AccountSid) != f.acct.Sid || deref(r.UsageUnit) != "megabytes" || r.Price == nil || *r.Price != 0 {
			t.Errorf("record %+v", r)
		}
	}
	if got["turnmegabytes"] != "2.251" || got["turnmegabytes-eu"] != "0.001" || len(got) != 2 {
		t.Fatalf("ListUsageRecord = %v, want turnmegabytes 2.251 (subaccount included) and turnmegabytes-eu 0.001", got)
	}

	own, err := api.ListUsageRecord(&openapi.ListUsageRecordParams{Category: ptr("turnmegabytes"), IncludeSubaccounts: ptr(false)})
	if err != nil || len(own) != 1 || deref(own[0].Usage) != "2.001" || deref(own[0].Count) != "2.001" {
		t.Fatalf("without subaccounts: %+v %v", own, err)
	}

	daily, err := api.ListUsageRecordDaily(&openapi.ListUsageRecordDailyParams{
		Category: ptr("turnmegabytes"), StartDate: ptr(day(0)), EndDate: ptr(day(2)), PageSize: ptr(1)})
	if err != nil {
		t.Fatal(err)
	}
	var days []string
	for _, r := range daily {
		days = append(days, deref(r.StartDate)+"="+deref(r.Usage))
	}
	if want := day(0) + "=2.001 " + day(1) + "=0.25 " + day(2) + "=0"; strings.Join(days, " ") != want {
		t.Fatalf("daily over three pages of one = %v, want %s", days, want)
	}

	k, err := f.svc.CreateKey(t.Context(), f.acct.Sid, "usage reader")
	if err != nil {
		t.Fatal(err)
	}
	byKey, err := f.twilioClient(t, k.Sid, k.Secret, f.acct.Sid).Api.ListUsageRecordAllTime(&openapi.ListUsageRecordAllTimeParams{Category: ptr("turnmegabytes")})
	if err != nil || len(byKey) != 1 || deref(byKey[0].Usage) != "2.251" {
		t.Fatalf("AllTime with an API key: %+v %v", byKey, err)
	}

	none, err := api.ListUsageRecordToday(&openapi.ListUsageRecordTodayParams{Category: ptr("calls")})
	if err != nil || len(none) != 0 {
		t.Fatalf("unknown category: %+v %v, want an empty list", none, err)
	}
	rel, err := api.ListUsageRecord(&openapi.ListUsageRecordParams{Category: ptr("turnmegabytes"), StartDate: ptr("-1days")})
	if err != nil || len(rel) != 1 || deref(rel[0].Usage) != "0.25" || deref(rel[0].StartDate) != day(1) {
		t.Fatalf("StartDate -1days: %+v %v", rel, err)
	}
}

// TestUsageRecordsPrice: usage.price_per_megabyte prices the megabytes exactly.
func TestUsageRecordsPrice(t *testing.T) {
	f, _ := usageFixture(t)
	f.svc.SetUsageOptionsForTest(t, "0.0004")
	res := f.do(t, request{method: "GET", path: "/2010-04-01/Accounts/" + f.acct.Sid + "/Usage/Records/AllTime.json?Category=turnmegabytes",
		user: f.acct.Sid, pass: f.acct.AuthToken})
	var l struct {
		UsageRecords []struct{ Price, Usage string } `json:"usage_records"`
	}
	if res.status != 200 || json.Unmarshal(res.body, &l) != nil || len(l.UsageRecords) != 1 || l.UsageRecords[0].Price != "0.0009004" {
		t.Fatalf("AllTime: %d %s, want price 2.251 * 0.0004 = 0.0009004", res.status, res.body)
	}
}

// TestUsageRecordsBadInput: clear 400s and 404s, never a panic.
func TestUsageRecordsBadInput(t *testing.T) {
	f, _ := usageFixture(t)
	base := "/2010-04-01/Accounts/" + f.acct.Sid + "/Usage/Records"
	for _, c := range []struct {
		path   string
		status int
		want   string
	}{
		{base + ".json?StartDate=2020-05-03&EndDate=2020-05-01", 400, "after EndDate"},
		{base + "/Daily.json?PageSize=1001", 400, "PageSize"},
		{base + ".json?StartDate=yesterday-ish", 400, "StartDate"},
		{base + ".json?IncludeSubaccounts=maybe", 400, "IncludeSubaccounts"},
		{base + ".json?PageToken=XYZ", 400, "PageToken"},
		{base + "/Hourly.json", 404, ""},
		{base + "/Daily.json?StartDate=1900-01-01", 400, "longer than"},
	} {
		res := f.do(t, request{method: "GET", path: c.path, user: f.acct.Sid, pass: f.acct.AuthToken})
		if res.status != c.status || !strings.Contains(string(res.body), c.want) {
			t.Errorf("GET %s: %d %s, want %d with %q", c.path, res.status, res.body, c.status, c.want)
		}
	}
}

// TestAllocationsAndRevocations: an account sees its own and its
// subaccounts' allocations, not another account's (404 to delete); kill,
// revoke, key deletion and suspension write the revocations relays act on.
func TestAllocationsAndRevocations(t *testing.T) {
	f, sub := usageFixture(t)
	other, err := f.svc.CreateAccount(t.Context(), "other", "")
	if err != nil {
		t.Fatal(err)
	}
	live := func(id, acct string) store.LiveAllocation {
		return store.LiveAllocation{ID: id, AccountSid: acct, Username: "1:" + acct + ":x", Client: "127.0.0.1:1", Transport: "udp",
			Relay: "127.0.0.1:2", Created: f.clock.Now()}
	}
	if err := f.store.PutLiveAllocations(t.Context(), "n1", []store.LiveAllocation{
		live("RAown", f.acct.Sid), live("RAsub", sub.Sid), live("RAother", other.Sid)}, f.clock.Now()); err != nil {
		t.Fatal(err)
	}
	as := func(a store.Account, method, path string) response {
		return f.do(t, request{method: method, path: path, user: a.Sid, pass: a.AuthToken})
	}
	res := as(f.acct, "GET", "/v1/Accounts/"+f.acct.Sid+"/Allocations.json")
	if res.status != 200 || !strings.Contains(string(res.body), `"RAown"`) || !strings.Contains(string(res.body), `"RAsub"`) || strings.Contains(string(res.body), "RAother") {
		t.Fatalf("list: %d %s", res.status, res.body)
	}
	if res := as(f.acct, "DELETE", "/v1/Accounts/"+f.acct.Sid+"/Allocations/RAother.json"); res.status != 404 {
		t.Fatalf("delete another account's allocation: %d %s, want 404", res.status, res.body)
	}
	if res := as(other, "DELETE", "/v1/Accounts/"+f.acct.Sid+"/Allocations/RAown.json"); res.status != 404 {
		t.Fatalf("delete through another account's path: %d %s, want 404", res.status, res.body)
	}
	if res := as(f.acct, "DELETE", "/v1/Accounts/"+f.acct.Sid+"/Allocations/RAsub.json"); res.status != 204 {
		t.Fatalf("delete a subaccount's allocation: %d %s", res.status, res.body)
	}

	exp := strconv.FormatInt(f.clock.Now().Add(time.Hour).Unix(), 10)
	revoke := func(a store.Account, username string) int {
		return as(a, "POST", "/v1/Accounts/"+a.Sid+"/Credentials/"+url.PathEscape(username)+"/revoke").status
	}
	if s := revoke(f.acct, exp+":"+other.Sid+":abc"); s != 404 {
		t.Fatalf("revoke another account's username: %d, want 404", s)
	}
	if s := revoke(f.acct, "not a username"); s != 400 {
		t.Fatalf("revoke garbage: %d, want 400", s)
	}
	if s := revoke(f.acct, exp+":"+sub.Sid+":abc"); s != 204 {
		t.Fatalf("revoke a subaccount's username: %d, want 204", s)
	}

	k, err := f.svc.CreateKey(t.Context(), f.acct.Sid, "k")
	if err != nil {
		t.Fatal(err)
	}
	if res := as(f.acct, "DELETE", "/2010-04-01/Accounts/"+f.acct.Sid+"/Keys/"+k.Sid+".json"); res.status != 204 {
		t.Fatalf("delete key: %d", res.status)
	}
	if _, err := f.svc.SetAccountStatus(t.Context(), f.acct.Sid, store.StatusSuspended); err != nil {
		t.Fatal(err)
	}
	revs, err := f.store.ListRevocations(t.Context(), f.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range revs {
		got = append(got, r.Kind+"="+r.Value)
	}
	want := []string{
		"account=" + f.acct.Sid, "account=" + sub.Sid, // suspending the parent cuts the subaccount too
		"allocation=RAsub",
		"key=" + f.acct.Sid + ":" + auth.KeyTag(k.Sid),
		"user=" + exp + ":" + sub.Sid + ":abc",
	}
	slices.Sort(got)
	slices.Sort(want)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("revocations:\n got %v\nwant %v", got, want)
	}
	if _, err := f.svc.SetAccountStatus(t.Context(), sub.Sid, store.StatusSuspended); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.SetAccountStatus(t.Context(), f.acct.Sid, store.StatusActive); err != nil {
		t.Fatal(err)
	}
	revs, _ = f.store.ListRevocations(t.Context(), f.clock.Now())
	var accts []string
	for _, r := range revs {
		if r.Kind == store.RevokeAccount {
			accts = append(accts, r.Value)
		}
	}
	if len(accts) != 1 || accts[0] != sub.Sid {
		t.Fatalf("after reactivating the parent, accounts revoked = %v, want only the subaccount suspended on its own", accts)
	}
}
