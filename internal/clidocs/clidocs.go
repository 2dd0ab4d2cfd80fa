// Package clidocs renders a cobra command tree as a Markdown reference of every command and flag
// with its environment variable, so that docs/configuration.md is generated from the code and
// cannot drift from it.
package clidocs

import (
	"bytes"
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Options say how to render.
type Options struct {
	// Title is the document's first heading.
	Title string
	// Intro is Markdown placed under the title.
	Intro string
	// EnvName returns the environment variable that sets a flag; nil omits the column.
	EnvName func(flag string) string
}

// Markdown renders root and every visible subcommand, depth first in name order.
func Markdown(root *cobra.Command, o Options) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# %s\n\n", o.Title)
	if o.Intro != "" {
		fmt.Fprintf(&b, "%s\n\n", strings.TrimSpace(o.Intro))
	}
	cmds := visible(root)
	b.WriteString("Commands:\n\n")
	for _, c := range cmds {
		fmt.Fprintf(&b, "- [`%s`](#%s): %s\n", c.CommandPath(), anchor(c.CommandPath()), c.Short)
	}
	b.WriteString("\n")
	for _, c := range cmds {
		writeCommand(&b, c, o)
	}
	return bytes.TrimRight(b.Bytes(), "\n")
}

// visible returns root's runnable, non-hidden commands (root included when runnable), sorted by
// path.
func visible(root *cobra.Command) []*cobra.Command {
	var out []*cobra.Command
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" || c.Name() == "completion" {
			return
		}
		if c.Runnable() {
			out = append(out, c)
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	sort.Slice(out, func(i, j int) bool { return out[i].CommandPath() < out[j].CommandPath() })
	return out
}

// anchor is GitHub's heading anchor for "## path".
func anchor(path string) string {
	return strings.ReplaceAll(strings.ToLower(path), " ", "-")
}

func writeCommand(b *bytes.Buffer, c *cobra.Command, o Options) {
	fmt.Fprintf(b, "## %s\n\n%s\n\n", c.CommandPath(), c.Short)
	fmt.Fprintf(b, "```\n%s\n```\n\n", c.UseLine())
	if long := strings.TrimSpace(c.Long); long != "" {
		fmt.Fprintf(b, "```text\n%s\n```\n\n", long)
	}
	if ex := strings.TrimRight(c.Example, "\n "); ex != "" {
		fmt.Fprintf(b, "Examples:\n\n```sh\n%s\n```\n\n", ex)
	}
	var flags []*pflag.Flag
	add := func(f *pflag.Flag) {
		if !f.Hidden && f.Name != "help" {
			flags = append(flags, f)
		}
	}
	c.NonInheritedFlags().VisitAll(add)
	c.InheritedFlags().VisitAll(add)
	if len(flags) == 0 {
		b.WriteString("No flags.\n\n")
		return
	}
	sort.Slice(flags, func(i, j int) bool { return flags[i].Name < flags[j].Name })
	if o.EnvName != nil {
		b.WriteString("| Flag | Environment variable | Type | Default | Description |\n|---|---|---|---|---|\n")
	} else {
		b.WriteString("| Flag | Type | Default | Description |\n|---|---|---|---|\n")
	}
	for _, f := range flags {
		name := "`--" + f.Name + "`"
		if f.Shorthand != "" {
			name = "`-" + f.Shorthand + "`, " + name
		}
		def := "—"
		if f.DefValue != "" && f.DefValue != "[]" {
			def = "`" + f.DefValue + "`"
		}
		typ := f.Value.Type()
		if strings.HasSuffix(typ, "Slice") || strings.HasSuffix(typ, "Array") {
			typ += " (repeatable)"
		}
		if o.EnvName != nil {
			fmt.Fprintf(b, "| %s | `%s` | %s | %s | %s |\n", name, o.EnvName(f.Name), typ, cell(def), cell(f.Usage))
		} else {
			fmt.Fprintf(b, "| %s | %s | %s | %s |\n", name, typ, cell(def), cell(f.Usage))
		}
	}
	b.WriteString("\n")
}

// cell makes text safe inside a Markdown table cell.
func cell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.ReplaceAll(s, "\n", " ")
}
