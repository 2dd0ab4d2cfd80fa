package harness

import (
	"bufio"
	"context"
	_ "embed" // the moto extension script
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// motoServerExt adds the IAM actions moto 5.2.1 lacks (AddClientIDToOpenIDConnectProvider,
// RemoveClientIDFromOpenIDConnectProvider) to moto's own IAM responses, then runs moto_server.
//
//go:embed motoext/moto_server_ext.py
var motoServerExt string

// motoExtArgv is the command line that runs moto_server through motoServerExt on port of 127.0.0.1
// ("0": moto_server picks one), with a Python that can import moto: the interpreter named by
// motoServer's #! line, else python3 or python on $PATH (pyenv and virtualenv shims are scripts of
// their own, but python3 then resolves to the same environment).
func motoExtArgv(ctx context.Context, motoServer, port string) ([]string, error) {
	var candidates [][]string
	if interp := shebang(motoServer); len(interp) > 0 && strings.Contains(filepath.Base(interp[len(interp)-1]), "python") {
		candidates = append(candidates, interp)
	}
	for _, name := range []string{"python3", "python"} {
		if p, err := exec.LookPath(name); err == nil {
			candidates = append(candidates, []string{p})
		}
	}
	var tried []string
	for _, c := range candidates {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		out, err := exec.CommandContext(ctx, c[0], append(c[1:], "-c", "import moto.server, moto.iam.responses")...).CombinedOutput()
		cancel()
		if err == nil {
			return append(append(c, "-c", motoServerExt), "-H", "127.0.0.1", "-p", port), nil
		}
		tried = append(tried, fmt.Sprintf("%s: %v: %s", strings.Join(c, " "), err, lastLine(out)))
	}
	return nil, fmt.Errorf("moto_server is %s, but no Python interpreter found that imports moto, needed to run "+
		"integration/harness/motoext/moto_server_ext.py (install moto with: pip install 'moto[server]'); tried: %s",
		motoServer, strings.Join(tried, "; "))
}

// shebang returns the interpreter command of a script's #! line, or nil.
func shebang(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "#!") {
		return nil
	}
	return strings.Fields(strings.TrimPrefix(line, "#!"))
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}
