package partition

import "testing"

// TestCandidateTieBreak covers the equal-score path, which real hashes hit
// with odds 2^-64 and black-box tests therefore never reach.
func TestCandidateTieBreak(t *testing.T) {
	tests := []struct {
		name string
		c, d candidate
		want bool
	}{
		{name: "higher score wins", c: candidate{"b", 2}, d: candidate{"a", 1}, want: true},
		{name: "lower score loses", c: candidate{"a", 1}, d: candidate{"b", 2}, want: false},
		{name: "equal score, smaller name wins", c: candidate{"a", 7}, d: candidate{"b", 7}, want: true},
		{name: "equal score, larger name loses", c: candidate{"b", 7}, d: candidate{"a", 7}, want: false},
		{name: "identical does not beat itself", c: candidate{"a", 7}, d: candidate{"a", 7}, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.c.beats(tt.d); got != tt.want {
				t.Errorf("%+v.beats(%+v) = %v, want %v", tt.c, tt.d, got, tt.want)
			}
		})
	}
}
