package issuer

import "testing"

// SetUsageOptionsForTest sets usage.price_per_megabyte on a running Service.
func (s *Service) SetUsageOptionsForTest(_ testing.TB, pricePerMegabyte string) {
	s.usage.PricePerMegabyte = pricePerMegabyte
}
