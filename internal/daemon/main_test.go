package daemon

import (
	"os"
	"testing"

	"banger/internal/vmm/vmmtest"
)

// TestMain lets this test binary double as the vmmtest "VMM": the test
// driver re-executes it, and vmmtest.Main serves the guest side then exits.
func TestMain(m *testing.M) {
	vmmtest.Main()
	os.Exit(m.Run())
}
