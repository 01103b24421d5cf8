package recipes

import (
	"fmt"
	"strings"

	"github.com/hashicorp/hcl/v2/hclwrite"
)

// HCL renders the resolved job — variables applied, every default filled —
// as a recipe that Load reads back to an equal Job. The blocks' attributes
// come from the tables in job.go.
func (j *Job) HCL() []byte {
	f := hclwrite.NewEmptyFile()
	root := f.Body()
	if len(j.Variables) > 0 {
		root.AppendUnstructuredTokens(hclwrite.Tokens{{Bytes: []byte("# resolved variables (already applied below):\n")}})
		for _, k := range sortedKeys(j.Variables) {
			root.AppendUnstructuredTokens(hclwrite.Tokens{{Bytes: []byte("#   " + k + " = " + j.Variables[k] + "\n")}})
		}
	}
	jb := root.AppendNewBlock("job", []string{j.Name}).Body()
	writeFields(jb, jobSection.fields, "", j)
	augmentSection.write(jb, &j.Augment)
	writeGraph(modelSection.write(jb, &j.Model), &j.Model)
	checkpointSection.write(jb, &j.Checkpoint)
	optimizerSection.write(jb, &j.Optimizer)
	for i := range j.Prune {
		pruneSection.write(jb, &j.Prune[i])
	}
	if j.Teacher != nil {
		teacherSection.write(jb, j.Teacher)
	}
	if j.Distill != nil {
		db := distillSection.write(jb, j.Distill)
		if j.Distill.Hint != nil {
			hintSection.write(db, j.Distill.Hint)
		}
	}
	if j.KMeans != nil {
		kmeansSection.write(jb, j.KMeans)
	}
	if j.Quantize != nil {
		quantizeSection.write(jb, j.Quantize)
	}
	if j.ThinAtEpoch > 0 {
		thinSection.write(jb, j)
	}
	if j.Sensitivity != nil {
		sensitivitySection.write(jb, j.Sensitivity)
	}
	if j.Target != nil {
		targetSection.write(jb, j.Target)
	}
	if j.PostTraining != nil {
		postTrainingSection.write(jb, j.PostTraining)
	}
	for i := range j.Factorize {
		factorizeSection.write(jb, &j.Factorize[i])
	}
	for i := range j.Regularize {
		regularizeSection.write(jb, &j.Regularize[i])
	}
	return f.Bytes()
}

// HistoryChanges lists the differences between two resolved jobs that
// would change a run's history — everything but the checkpoint block, the
// thread count, the data's folder and how the recipe was written (file,
// variables) — as
// "old line → new line" pairs of their rendered recipes. A resumed run
// refuses a recipe with any.
func (j *Job) HistoryChanges(old *Job) []string {
	norm := func(x *Job) []string {
		c := *x
		// Where the data lies is not what it is: a moved folder resumes.
		c.Checkpoint, c.Threads, c.Variables, c.File, c.DataDir = Checkpoint{}, 0, nil, "", ""
		return strings.Split(strings.TrimSpace(string(c.HCL())), "\n")
	}
	a, b := norm(old), norm(j)
	var out []string
	for i := range max(len(a), len(b)) {
		var x, y string
		if i < len(a) {
			x = strings.Join(strings.Fields(a[i]), " ")
		}
		if i < len(b) {
			y = strings.Join(strings.Fields(b[i]), " ")
		}
		if x != y {
			out = append(out, fmt.Sprintf("%q → %q", x, y))
		}
	}
	return out
}
