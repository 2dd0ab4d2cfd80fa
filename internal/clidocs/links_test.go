package clidocs_test

import (
	"bufio"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// TestDocLinks checks every relative Markdown link in README.md, CONTRIBUTING.md and docs/*.md:
// the file or directory it points at must exist, and a #anchor must name a heading of the target
// page (or of the same page, for a bare #anchor), with GitHub's rules for heading anchors. Links
// with a scheme (https:, mailto:, …) are not followed. Links inside code blocks and code spans are
// not links and are skipped.
func TestDocLinks(t *testing.T) {
	root := repoRoot(t)
	files := []string{"README.md", "CONTRIBUTING.md"}
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		rel, err := filepath.Rel(root, d)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, rel)
	}

	anchors := map[string]map[string]bool{} // absolute path of a .md file → its anchors
	anchorsOf := func(path string) (map[string]bool, error) {
		if a, ok := anchors[path]; ok {
			return a, nil
		}
		a, err := markdownAnchors(path)
		if err != nil {
			return nil, err
		}
		anchors[path] = a
		return a, nil
	}

	checked := 0
	for _, file := range files {
		path := filepath.Join(root, file)
		links, err := markdownLinks(path)
		if errors.Is(err, os.ErrNotExist) && file == "CONTRIBUTING.md" {
			continue // optional
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range links {
			if isExternal(l.target) {
				continue
			}
			checked++
			target, anchor, _ := strings.Cut(l.target, "#")
			if target != "" {
				if unescaped, err := url.PathUnescape(target); err == nil {
					target = unescaped
				}
			}
			dest := path // a bare #anchor: this page
			if target != "" {
				if strings.HasPrefix(target, "/") {
					dest = filepath.Join(root, filepath.FromSlash(target))
				} else {
					dest = filepath.Join(filepath.Dir(path), filepath.FromSlash(target))
				}
				if _, err := os.Stat(dest); err != nil {
					t.Errorf("%s:%d: link %q: %s does not exist", file, l.line, l.target, relTo(root, dest))
					continue
				}
			}
			if anchor == "" {
				continue
			}
			if !strings.HasSuffix(dest, ".md") {
				continue // anchors into other files (code, YAML) are line references GitHub renders; not checked
			}
			a, err := anchorsOf(dest)
			if err != nil {
				t.Errorf("%s:%d: link %q: %v", file, l.line, l.target, err)
				continue
			}
			if !a[strings.ToLower(anchor)] {
				t.Errorf("%s:%d: link %q: %s has no heading with the anchor #%s", file, l.line, l.target, relTo(root, dest), anchor)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no relative link found: the link parser is broken")
	}
	t.Logf("%d relative links checked in %d files", checked, len(files))
}

// TestGitHubAnchor pins the heading → anchor rule against anchors GitHub is known to generate.
func TestGitHubAnchor(t *testing.T) {
	for heading, want := range map[string]string{
		"Runbook: Cluster API / EKS Anywhere":                               "runbook-cluster-api--eks-anywhere",
		"Keeping it registered: `serve --iam-register`":                     "keeping-it-registered-serve---iam-register",
		"Signer mode (KEP-740): the issuer signs, promote needs no restart": "signer-mode-kep-740-the-issuer-signs-promote-needs-no-restart",
		"What the issuer's service account needs":                           "what-the-issuers-service-account-needs",
		"Fuzzing (`hack/fuzz-all.sh`)":                                      "fuzzing-hackfuzz-allsh",
		"kube-oidc-issuer keys list":                                        "kube-oidc-issuer-keys-list",
		"See [the docs](docs/x.md) and_more":                                "see-the-docs-and_more",
		"Secret → JWKS ≥ 1 key":                                             "secret--jwks--1-key",
		"`InvalidIdentityToken: Incorrect token audience`":                  "invalididentitytoken-incorrect-token-audience",
		"Refused flags: `--timeout 0s must be positive`":                    "refused-flags---timeout-0s-must-be-positive",
		"Measured 2026-12-02":                                               "measured-2026-12-02",
	} {
		if got := githubAnchor(heading); got != want {
			t.Errorf("githubAnchor(%q) = %q, want %q", heading, got, want)
		}
	}
}

// repoRoot walks up from the working directory to the directory holding go.mod.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

func relTo(root, path string) string {
	if rel, err := filepath.Rel(root, path); err == nil {
		return filepath.ToSlash(rel)
	}
	return path
}

// isExternal reports whether target has a URL scheme (https:, mailto:, …) or is protocol-relative.
func isExternal(target string) bool {
	if strings.HasPrefix(target, "//") {
		return true
	}
	scheme, _, ok := strings.Cut(target, ":")
	if !ok || scheme == "" || strings.ContainsAny(scheme, "/#?") {
		return false
	}
	for i, r := range scheme {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && (r >= '0' && r <= '9' || r == '+' || r == '-' || r == '.')) {
			return false
		}
	}
	return true
}

type link struct {
	line   int
	target string
}

var (
	// inlineLink matches [text](target) and ![alt](target), with one level of nested brackets in the
	// text and of parentheses in the target, and an optional title.
	inlineLink = regexp.MustCompile(`\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^<>\n]*>|(?:[^()\s]|\([^()\s]*\))*)(?:\s+(?:"[^"]*"|'[^']*'|\([^()]*\)))?\s*\)`)
	// refDefinition matches a reference definition: [id]: target.
	refDefinition = regexp.MustCompile(`^ {0,3}\[[^\]]+\]:\s*(<[^<>]*>|\S+)`)
	atxHeading    = regexp.MustCompile(`^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*$`)
	htmlAnchor    = regexp.MustCompile(`<a\s+(?:name|id)="([^"]+)"`)
	atxClosing    = regexp.MustCompile(`(^|[ \t]+)#+[ \t]*$`)
	fence         = regexp.MustCompile("^ {0,3}(```+|~~~+)")
)

// scanMarkdown calls fn for every line outside fenced code blocks, with code spans blanked out.
func scanMarkdown(path string, fn func(lineNo int, line string)) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	inFence, fenceMark := false, ""
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if m := fence.FindStringSubmatch(line); m != nil {
			mark := m[1]
			switch {
			case !inFence:
				inFence, fenceMark = true, mark
				continue
			case mark[0] == fenceMark[0] && len(mark) >= len(fenceMark) && strings.TrimSpace(strings.TrimLeft(strings.TrimSpace(line), mark[:1])) == "":
				inFence = false
				continue
			}
		}
		if inFence {
			continue
		}
		fn(n, blankCodeSpans(line))
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	return nil
}

// blankCodeSpans replaces the content of each `code span` with spaces (keeping the backticks), so
// that Markdown inside code is not taken for links.
func blankCodeSpans(line string) string {
	b := []byte(line)
	for i := 0; i < len(b); {
		if b[i] != '`' {
			i++
			continue
		}
		run := 0
		for i+run < len(b) && b[i+run] == '`' {
			run++
		}
		closeAt := -1
		for j := i + run; j < len(b); {
			if b[j] != '`' {
				j++
				continue
			}
			k := 0
			for j+k < len(b) && b[j+k] == '`' {
				k++
			}
			if k == run {
				closeAt = j
				break
			}
			j += k
		}
		if closeAt < 0 {
			i += run
			continue
		}
		for j := i + run; j < closeAt; j++ {
			b[j] = ' '
		}
		i = closeAt + run
	}
	return string(b)
}

// markdownLinks returns the targets of the inline links and reference definitions in path.
func markdownLinks(path string) ([]link, error) {
	var out []link
	err := scanMarkdown(path, func(n int, line string) {
		for _, m := range inlineLink.FindAllStringSubmatch(line, -1) {
			out = append(out, link{line: n, target: strings.Trim(m[1], "<>")})
		}
		if m := refDefinition.FindStringSubmatch(line); m != nil {
			out = append(out, link{line: n, target: strings.Trim(m[1], "<>")})
		}
	})
	return out, err
}

// markdownAnchors returns the anchors GitHub gives the headings of path (and explicit HTML
// anchors), with -1, -2, … for repeated headings.
func markdownAnchors(path string) (map[string]bool, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	// Headings are read from the raw lines (code spans count for the anchor's text), but only on
	// lines outside fenced code blocks.
	lines := strings.Split(string(raw), "\n")
	out := map[string]bool{}
	seen := map[string]int{}
	add := func(a string) {
		if c, ok := seen[a]; ok {
			seen[a] = c + 1
			a = fmt.Sprintf("%s-%d", a, c+1)
		} else {
			seen[a] = 0
		}
		out[a] = true
	}
	prev := ""
	err = scanMarkdown(path, func(n int, _ string) {
		line := strings.TrimRight(lines[n-1], "\r")
		defer func() { prev = line }()
		for _, m := range htmlAnchor.FindAllStringSubmatch(line, -1) {
			out[strings.ToLower(m[1])] = true
		}
		if m := atxHeading.FindStringSubmatch(line); m != nil {
			text := atxClosing.ReplaceAllString(m[2], "") // "## Title ##" → "Title"
			if strings.Trim(text, "#") == "" {
				text = ""
			}
			add(githubAnchor(text))
			line = "" // not the text of a setext heading below
			return
		}
		// A setext heading: a paragraph line underlined with === or ---.
		trimmed := strings.TrimSpace(line)
		if trimmed != "" && strings.Trim(trimmed, "=") == "" || len(trimmed) >= 2 && strings.Trim(trimmed, "-") == "" {
			p := strings.TrimSpace(prev)
			if p != "" && !strings.HasPrefix(p, "|") && !strings.HasPrefix(p, "-") && !strings.HasPrefix(p, "*") {
				add(githubAnchor(p))
			}
		}
	})
	return out, err
}

var mdLinkInHeading = regexp.MustCompile(`!?\[([^\]]*)\]\([^)]*\)`)

// githubAnchor is the anchor GitHub generates for a heading: the text (links reduced to their
// text), lowercased, without characters other than letters, marks, digits, connector punctuation
// ('_'), spaces and '-', spaces turned into '-'.
func githubAnchor(heading string) string {
	text := mdLinkInHeading.ReplaceAllString(heading, "$1")
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(text)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-', unicode.IsLetter(r), unicode.IsMark(r), unicode.IsDigit(r), unicode.IsNumber(r), unicode.Is(unicode.Pc, r):
			b.WriteRune(r)
		}
	}
	return b.String()
}
