package scenarios

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Expand turns the FILE|DIR arguments of the command line into scenario
// files, in argument order. A file is taken as it is, whatever its name.
// A directory means every *.yaml file directly in it, in name order, not
// recursing (scenarios/vm/ is a separate library that `make sim` must not
// pick up), and skipping names that start with "." as a shell glob would
// (editor lock and swap files). A directory with no scenario in it is an
// error, since running nothing would pass silently. Every problem is
// reported; the files found are returned with them.
func Expand(args []string) ([]string, error) {
	var files []string
	var errs []error
	for _, arg := range args {
		info, err := os.Stat(arg)
		if err != nil {
			errs = append(errs, fmt.Errorf("scenarios: %w", err))
			continue
		}
		if !info.IsDir() {
			files = append(files, arg)
			continue
		}
		entries, err := os.ReadDir(arg) // sorted by name
		if err != nil {
			errs = append(errs, fmt.Errorf("scenarios: %w", err))
			continue
		}
		found := 0
		for _, e := range entries {
			name := e.Name()
			if !strings.HasSuffix(name, ".yaml") || strings.HasPrefix(name, ".") {
				continue
			}
			path := filepath.Join(arg, name)
			// Follow symlinks: a linked scenario is a scenario, a linked
			// directory is not.
			if fi, err := os.Stat(path); err != nil {
				errs = append(errs, fmt.Errorf("scenarios: %w", err))
				continue
			} else if fi.IsDir() {
				continue
			}
			files = append(files, path)
			found++
		}
		if found == 0 {
			errs = append(errs, fmt.Errorf("scenarios: %s: no *.yaml scenario files in this directory", arg))
		}
	}
	return files, errors.Join(errs...)
}
