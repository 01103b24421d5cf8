package run

import (
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/go-hclog"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/cluster"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/rundir"
)

// storeFiles are files for the job's object store, and the names of
// those a spec lists, in order.
type storeFiles struct {
	files map[string][]byte
	names []string
}

// teacherObjects are the teachers' model files as store objects, made
// once for the logits tasks and the phase.
func teacherObjects(job *recipes.Job, teachers []*model.Model) (*storeFiles, error) {
	sf := &storeFiles{files: map[string][]byte{}}
	for k, tm := range teachers {
		mf, err := rundir.ExportModel(tm, fmt.Sprintf("%s-teacher-%d", job.Name, k+1), job.Dataset, job.Files())
		if err != nil {
			return nil, err
		}
		b, err := checkpoint.Encode(mf)
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("%s.teacher-%d.arrow", cluster.Token(job.Name), k+1)
		sf.files[name] = b
		sf.names = append(sf.names, name)
	}
	return sf, nil
}

// datasetObjects adds the dataset's files (from dataDir, or where it is
// installed) to files as store objects and returns their names.
func datasetObjects(job *recipes.Job, dataDir string, files map[string][]byte) ([]string, error) {
	if data.IsText(job.Dataset) {
		return nil, job.Errorf("dataset", "a cluster ships the image sets' IDX files and your own files to its workers; text datasets are not shipped yet: run %s without workers", job.Dataset)
	}
	dir, list := dataDir, data.Files()
	var err error
	switch {
	case data.IsFiles(job.Dataset):
		dir = cmp.Or(dataDir, job.DataDir)
		if list, err = data.FilesIn(job.Dataset, dir); err != nil {
			return nil, fmt.Errorf("run: the dataset to send the workers: %w", err)
		}
	case dir == "":
		if dir, err = data.DefaultDir(job.Dataset); err != nil {
			return nil, err
		}
	}
	var names []string
	for _, f := range list {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return nil, fmt.Errorf("run: the dataset to send the workers: %w", err)
		}
		name := cluster.Token(job.Name) + ".data/" + f
		files[name] = b
		names = append(names, name)
	}
	return names, nil
}

// recipeLines are a resolved recipe's lines without comments and
// indentation, for comparing two renderings.
func recipeLines(b []byte) []string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

// TeacherLogitsFile holds an offline distillation's teacher logits in the
// run directory.
const TeacherLogitsFile = "teacher-logits.arrow"

// logitsState is a teacher-logits file's state document.
type logitsState struct {
	Dataset  string   `json:"dataset"`
	Set      string   `json:"set"` // the training split's name
	Samples  int      `json:"samples"`
	Classes  int      `json:"classes"`
	Teachers []string `json:"teachers,omitempty"` // weights digests of the teachers' model files
}

// logitsFile is the Arrow file of the teachers' logits for set.
func logitsFile(job *recipes.Job, set *data.Set, logits []float32, teachers []string) *checkpoint.File {
	st, _ := json.Marshal(logitsState{Dataset: job.Dataset, Set: set.Name, Samples: set.Len(), Classes: set.Classes, Teachers: teachers})
	return &checkpoint.File{Kind: checkpoint.KindLogits, Job: job.Name, Version: rundir.Version, State: st,
		Tensors: []*checkpoint.Tensor{{Name: "logits", Role: checkpoint.RoleState, Shape: []int{set.Len(), set.Classes}, Data: logits}}}
}

// logitsFrom reads the logits back from their file.
func logitsFrom(f *checkpoint.File) ([]float32, error) {
	t := f.Tensor("logits")
	if f.Kind != checkpoint.KindLogits || t == nil || len(t.Shape) != 2 || len(t.Data) != t.Shape[0]*t.Shape[1] {
		return nil, fmt.Errorf("run: not a teacher-logits file (kind %q)", f.Kind)
	}
	return t.Data, nil
}

// datasetDir is where a worker reads a job's dataset: dataDir when given,
// else a temporary directory holding the coordinator's copy (objects)
// that cleanup removes.
func datasetDir(dataDir string, objects []string, files map[string][]byte, log hclog.Logger) (dir string, cleanup func(), err error) {
	if dataDir != "" || len(objects) == 0 {
		return dataDir, func() {}, nil
	}
	tmp, err := os.MkdirTemp("", "lathe-data-")
	if err != nil {
		return "", nil, fmt.Errorf("run: %w", err)
	}
	for _, n := range objects {
		// The object's path below "<job>.data/": a file name, or a path in
		// an image folder — never outside the directory.
		_, rel, _ := strings.Cut(n, ".data/")
		p := filepath.FromSlash(rel)
		if !filepath.IsLocal(p) {
			os.RemoveAll(tmp)
			return "", nil, fmt.Errorf("run: dataset object %q is not a path inside the dataset", n)
		}
		err := os.MkdirAll(filepath.Dir(filepath.Join(tmp, p)), 0o755)
		if err == nil {
			err = os.WriteFile(filepath.Join(tmp, p), files[n], 0o644)
		}
		if err != nil {
			os.RemoveAll(tmp)
			return "", nil, fmt.Errorf("run: %w", err)
		}
	}
	log.Debug("training on the dataset the coordinator sent", "files", len(objects))
	return tmp, func() { os.RemoveAll(tmp) }, nil
}
