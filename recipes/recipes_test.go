package recipes

import (
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestShippedRecipesLoad(t *testing.T) {
	files, err := filepath.Glob("*.hcl")
	if err != nil || len(files) < 4 {
		t.Fatalf("shipped recipes: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			j, err := Load(f, nil)
			if err != nil {
				t.Fatal(err)
			}
			// Every shipped recipe declares epochs and batch.
			j2, err := Load(f, []string{"epochs=1", "batch=256"})
			if err != nil {
				t.Fatal(err)
			}
			if j2.Epochs != 1 || j2.Batch != 256 {
				t.Fatalf("-var epochs=1 -var batch=256 gave epochs %d batch %d", j2.Epochs, j2.Batch)
			}
			if j.Name+".hcl" != f {
				t.Errorf("job %q lives in %s", j.Name, f)
			}
			// The resolved recipe reads back to the same job.
			back, err := Parse(j.HCL(), "resolved.hcl", nil)
			if err != nil {
				t.Fatalf("resolved recipe does not load: %v\n%s", err, j.HCL())
			}
			back.File, back.Ranges, back.Variables = j.File, j.Ranges, j.Variables
			if !reflect.DeepEqual(j, back) {
				t.Fatalf("resolved recipe differs:\n%+v\n%+v", j, back)
			}
		})
	}
	for _, want := range []string{"mnist-lenet300.hcl", "mnist-lenet5.hcl", "fashion-lenet5.hcl", "mnist-teacher.hcl"} {
		if _, err := os.Stat(want); err != nil {
			t.Errorf("missing shipped recipe %s", want)
		}
	}
}

const base = `variable "epochs" {
  default = 3
}
variable "batch" {
  default = 64
}
job "t" {
  epochs = var.epochs
  batch  = var.batch
  model {
    arch = "lenet300"
  }
  optimizer "sgd" {
    lr = 0.1
  }
}
`

func TestDefaultsAndVariables(t *testing.T) {
	j, err := Parse([]byte(base), "r.hcl", []string{"epochs=7"})
	if err != nil {
		t.Fatal(err)
	}
	d := Defaults()
	if j.Epochs != 7 || j.Batch != 64 || j.Dataset != d.Dataset || j.Optimizer.Momentum != d.Optimizer.Momentum || j.Optimizer.LR != 0.1 {
		t.Fatalf("%+v", j)
	}
	if got := j.Pos("optimizer.lr"); got != "r.hcl:14,10" {
		t.Fatalf("optimizer.lr position %q", got)
	}
	if got := j.Pos("dataset"); got != "r.hcl:7,1" {
		t.Fatalf("default field position %q, want the job block", got)
	}
	err = j.Errorf("model.arch", "layer %q not in model", "fc9")
	if !strings.Contains(err.Error(), "r.hcl:11,12") {
		t.Fatalf("later check lost its position: %v", err)
	}
}

func TestRecipeMistakes(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		vars      []string
		want      string
	}{
		{"negative lr", strings.Replace(base, "lr = 0.1", "lr = -0.1", 1), nil, "r.hcl:14,10: value out of range; optimizer.lr = -0.1 is outside (0, 100]"},
		{"batch zero", base, []string{"batch=0"}, "r.hcl:9,12: value out of range; batch = 0"},
		{"unknown attribute", strings.Replace(base, "lr = 0.1", "lr = 0.1\n    mommentum = 0.9", 1), nil, "r.hcl:15,5: Unsupported argument"},
		{"unknown block", strings.Replace(base, "model {", "sparsify {\n  }\n  model {", 1), nil, "r.hcl:10,3: Unsupported block type"},
		{"wrong type", strings.Replace(base, "lr = 0.1", `lr = "fast"`, 1), nil, "r.hcl:14,10: incorrect attribute value type; optimizer.lr must be number, got string"},
		{"fractional int", base, []string{"epochs=1.5"}, "r.hcl:8,12: invalid integer"},
		{"undeclared var", base, []string{"lr=0.1"}, "declares no variable \"lr\" (declared: batch, epochs)"},
		{"bad var", base, []string{"epochs"}, "want -var name=value"},
		{"var wrong type", base, []string{"epochs=abc"}, "epochs"},
		{"no model", strings.Replace(base, "model {\n    arch = \"lenet300\"\n  }\n", "", 1), nil, "r.hcl:7,1: missing model block"},
		{"syntax", base + "job {", nil, "r.hcl:17"},
		{"two jobs", base + "job \"u\" {\n}\n", nil, "r.hcl:17,1: a recipe holds exactly one job block, found 2"},
		{"target 1", withBlock("prune \"magnitude\" {\n    layers = [\"fc1\"]\n    target = 1\n  }"), nil, "r.hcl:12,14: value out of range; prune.0.target = 1; a sparsity must be in [0, 1)"},
		{"window backwards", withBlock("prune \"magnitude\" {\n    layers = [\"fc1\"]\n    target = 0.5\n    from_epoch = 2\n    to_epoch = 1\n  }"), nil, "r.hcl:14,16: invalid window; prune.0.to_epoch = 1 ends before from_epoch = 2"},
		{"window past the run", withBlock("prune \"magnitude\" {\n    layers = [\"fc1\"]\n    target = 0.5\n    to_epoch = 9\n  }"), nil, "prune.0.to_epoch = 9 is past the run's 3 epochs"},
		{"n over m", withBlock("prune \"nm\" {\n    layers = [\"fc1\"]\n    n = 5\n    m = 4\n  }"), nil, "r.hcl:12,9: value out of range; prune.0.n = 5 exceeds m = 4"},
		{"prune twice", withBlock("prune \"magnitude\" {\n    layers = [\"fc1\"]\n    target = 0.5\n  }\n  prune \"nm\" {\n    layers = [\"fc1\"]\n  }"), nil, "layer \"fc1\" is already in an earlier prune block"},
		{"unknown method", withBlock("prune \"taylor\" {\n    layers = [\"fc1\"]\n  }"), nil, "r.hcl:10,9: unknown prune method"},
		{"target on nm", withBlock("prune \"nm\" {\n    layers = [\"fc1\"]\n    target = 0.5\n  }"), nil, "Unsupported argument"},
		{"negative strength", withBlock("regularize \"group_lasso\" {\n    layers = [\"fc1\"]\n    strength = -1\n  }"), nil, "r.hcl:12,16: value out of range; regularize.0.strength = -1"},
		{"factorize rank and energy", withBlock("factorize {\n    layer = \"fc1\"\n    rank = 3\n    energy = 0.9\n    at_epoch = 1\n  }"), nil, "r.hcl:10,3: invalid factorize; set exactly one of rank and energy"},
		{"factorize too late", withBlock("factorize {\n    layer = \"fc1\"\n    rank = 3\n    at_epoch = 3\n  }"), nil, "r.hcl:13,16: value out of range; factorize.0.at_epoch = 3 leaves no epoch of the run's 3 to fine-tune"},
		{"no_decay kind", strings.Replace(base, "lr = 0.1", "lr = 0.1\n    no_decay = [\"bias\", \"embeddings\"]", 1), nil, `r.hcl:15,16: unknown value; optimizer.no_decay holds "embeddings"; allowed: bias, norm`},
		{"mean without std", strings.Replace(base, `arch = "lenet300"`, "arch = \"lenet300\"\n    mean = [0.5]", 1), nil, "r.hcl:12,12: invalid input normalization; model.mean has 1 values and model.std 0"},
		{"std zero", strings.Replace(base, `arch = "lenet300"`, "arch = \"lenet300\"\n    mean = [0.5, 0.5]\n    std = [0.5, 0]", 1), nil, "r.hcl:13,11: invalid input normalization; model.std [0.5 0]: every deviation must be above 0"},
		{"image_size of one value", strings.Replace(base, "  model {", "  image_size = [28]\n  model {", 1), nil, "r.hcl:10,16: invalid image_size; image_size has 1 values: give [rows, cols]"},
		{"validation_fraction of mnist", strings.Replace(base, "  model {", "  validation_fraction = 0.1\n  model {", 1), nil, "r.hcl:10,25: invalid validation_fraction; validation_fraction holds out a validation split of your own files"},
		{"thin inside a window", withBlock("prune \"structured\" {\n    layers = [\"fc1\"]\n    target = 0.5\n    to_epoch = 2\n  }\n  thin {\n    at_epoch = 2\n  }"), nil, "r.hcl:16,16: invalid window; thin.at_epoch = 2 is not after prune.0's window"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.src), "r.hcl", tc.vars)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error\n  %v\nlacks\n  %s", err, tc.want)
			}
		})
	}
}

// withBlock inserts a block into the base recipe's job, before its model
// block (at line 10 of the result).
func withBlock(block string) string {
	return strings.Replace(base, "  model {", "  "+block+"\n  model {", 1)
}

func TestOfflineDistillRefusedWithShiftsOrHints(t *testing.T) {
	base := `job "j" {
  augment {
    shift = 1
  }
  model {
    arch = "lenet300"
  }
  teacher {
    arch   = "teacher"
    epochs = 1
  }
  distill {
    offline = true
  }
}
`
	if _, err := Parse([]byte(base), "j.hcl", nil); err == nil || !strings.Contains(err.Error(), "j.hcl:13,15") || !strings.Contains(err.Error(), "augment.shift") {
		t.Fatalf("offline with shifts: %v", err)
	}
	j, err := Parse([]byte(strings.Replace(base, "shift = 1", "shift = 0", 1)), "j.hcl", nil)
	if err != nil || !j.Distill.Offline || !strings.Contains(string(j.HCL()), "offline") {
		t.Fatalf("offline without shifts: %v", err)
	}
}

// TestEveryFieldRoundTrips writes recipes that set every attribute of the
// tables to a value other than its default and checks that the resolved
// recipe names each attribute and reads back to the same job.
func TestEveryFieldRoundTrips(t *testing.T) {
	full := `job "full" {
  dataset = "fashion-mnist"
  seed = 7
  epochs = 9
  batch = 32
  eval_batch = 500
  validation = 1000
  threads = 2
  augment {
    shift = 2
    flip = true
    truncate = 0.25
  }
  model {
    mean = [0.25]
    std = [0.5]
    arch = "mlp"
    hidden = [64, 32]
    dropout = 0.1
    input_dropout = 0.2
    init = "kaiming"
  }
  checkpoint {
    every_epochs = 2
    every_steps = 100
    keep = 5
  }
  optimizer "adamw" {
    lr = 0.002
    beta1 = 0.8
    beta2 = 0.99
    eps = 1e-6
    weight_decay = 0.01
    lr_schedule = "step"
    warmup_epochs = 0.5
    min_lr = 0.0001
    step_epochs = 3
    gamma = 0.5
    clip_norm = 5
    no_decay = ["bias", "norm"]
  }
  prune "magnitude" {
    layers = ["fc1"]
    target = 0.8
    scope = "global"
    initial = 0.1
    schedule = "polynomial"
    power = 2
    from_epoch = 3
    to_epoch = 6
    guard_tolerance = 0.01
    guard_undo = true
    every_steps = 50
  }
  prune "structured" {
    layers = ["fc2"]
    target = 0.5
    granularity = "columns"
    norm = "l2"
    every_samples = 4096
    from_epoch = 2
    to_epoch = 4
    targets_from = "sensitivity"
  }
  prune "nm" {
    layers = ["fc3"]
    n = 1
    m = 8
    every_epochs = 0.5
  }
  teacher {
    arch = "teacher"
    hidden = [128]
    dropout = 0.3
    input_dropout = 0.1
    init = "kaiming"
    epochs = 2
    count = 2
  }
  distill {
    temperature = 2
    alpha = 0.5
  }
  quantize {
    layers = ["fc1", "fc2"]
    bits = 6
    from_epoch = 1
    granularity = "per_tensor"
    symmetric = false
    activations = 8
    freeze_observers_epoch = 5
    freeze_bn_epoch = 6
    fold_batch_norms = false
    gradual = [4]
    gradual_epochs = [4]
    layer_bits = { fc2 = 5 }
  }
  sensitivity {
    layers = ["fc2"]
    sparsities = [0.5, 0.9]
    tolerance = 0.01
    at_epoch = 1
  }
  factorize {
    layer = "fc3"
    energy = 0.9
    at_epoch = 7
  }
  regularize "group_lasso" {
    layers = ["fc1"]
    groups = "columns"
    strength = 0.001
    final_strength = 0.01
    from_epoch = 1
    to_epoch = 5
  }
}
`
	other := `job "other" {
  dataset = "csv"
  data_dir = "/srv/table"
  test_fraction = 0.2
  validation_fraction = 0.1
  split_seed = 5
  image_size = [32, 24]
  model {
    arch = "lenet300"
  }
  optimizer "sgd" {
    momentum = 0.5
    nesterov = true
  }
  teacher {
    file = "/models/teacher.onnx"
    mean = [0.1, 0.2, 0.3]
    std = [0.4, 0.5, 0.6]
  }
  distill {
    offline = true
  }
  cluster {
    layers = ["fc1"]
    clusters = 16
    from_epoch = 2
  }
}
`
	hint := `job "hint" {
  model {
    arch = "lenet300"
  }
  teacher {
    arch = "teacher"
    epochs = 1
  }
  distill {
    hint {
      teacher = "fc1"
      student = "fc2"
      weight = 0.5
    }
  }
}
`
	thin := `job "thin" {
  model {
    arch = "lenet300"
  }
  thin {
    at_epoch = 5
  }
  factorize {
    layer = "fc2"
    rank = 8
    at_epoch = 3
  }
}
`
	cnn := `job "cnn" {
  model {
    arch = "resnet"
    depth = 8
  }
  teacher {
    arch = "mobilenet"
    width = 0.5
    epochs = 1
  }
  distill {
  }
}
`
	graph := `job "graph" {
  model {
    arch = "graph"
    layer "stem" {
      kind = "conv"
      out = 8
      kernel = 3
      stride = 2
      pad = 1
      bias = false
    }
    repeat "res" {
      count = 2
      layer "dw" {
        kind = "conv"
        in = 8
        out = 8
        kernel = 3
        pad = 1
        groups = 8
        act = "relu6"
      }
      layer "sum" {
        kind = "add"
        inputs = ["dw", "in"]
      }
    }
    layer "fc" {
      kind = "linear"
      inputs = ["res"]
      out = 10
      dropout = 0.1
    }
  }
}
`
	text := `job "text" {
  dataset = "text"
  data_dir = "/srv/texts"
  class_balance = true
  train_windows = 16
  label_smoothing = 0.1
  model {
    arch = "transformer"
    dim = 64
    heads = 2
    blocks = 3
    mlp = 96
    skip_padding = true
    ngram = 3
  }
  teacher {
    arch = "transformer"
    dim = 128
    heads = 4
    blocks = 4
    mlp = 256
    skip_padding = true
    epochs = 2
  }
  distill {
  }
}
`
	seq := `job "seq" {
  dataset = "langid"
  model {
    arch = "graph"
    layer "emb" {
      kind = "embedding"
      out = 16
      vocab = 128
    }
    layer "attn" {
      kind = "attention"
      heads = 2
      causal = true
      skip_padding = true
    }
    layer "pool" {
      kind = "global_avgpool"
      skip_padding = true
    }
    layer "fc" {
      kind = "linear"
      out = 9
    }
  }
}
`
	written := ""
	for _, src := range []string{full, other, hint, thin, cnn, graph, text, seq} {
		j, err := Parse([]byte(src), "r.hcl", nil)
		if err != nil {
			t.Fatal(err)
		}
		out := string(j.HCL())
		written += out
		back, err := Parse([]byte(out), "back.hcl", nil)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		back.File, back.Ranges = j.File, j.Ranges
		if !reflect.DeepEqual(j, back) {
			t.Fatalf("read back differs:\n%+v\n%+v\n%s", j, back, out)
		}
		if d := Defaults(); j.Optimizer.Kind == "adamw" && (j.Optimizer.Beta1 == d.Optimizer.Beta1 || j.Optimizer.LR == d.Optimizer.LR) {
			t.Fatalf("the adamw block kept a default: %+v", j.Optimizer)
		}
	}
	var missing []string
	for _, name := range allFieldNames() {
		if !strings.Contains(written, name+" ") {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("the resolved recipes never wrote %v:\n%s", missing, written)
	}
}

func allFieldNames() []string {
	var out []string
	add := func(names ...string) { out = append(out, names...) }
	add(fieldNames(jobSection)...)
	add(fieldNames(augmentSection)...)
	add(fieldNames(modelSection)...)
	add(fieldNames(checkpointSection)...)
	add(fieldNames(optimizerSection)...)
	add(fieldNames(pruneSection)...)
	add(fieldNames(regularizeSection)...)
	add(fieldNames(factorizeSection)...)
	add(fieldNames(teacherSection)...)
	add(fieldNames(distillSection)...)
	add(fieldNames(hintSection)...)
	add(fieldNames(kmeansSection)...)
	add(fieldNames(quantizeSection)...)
	add(fieldNames(thinSection)...)
	add(fieldNames(sensitivitySection)...)
	add(fieldNames(layerSection)...)
	add(fieldNames(repeatSection)...)
	return out
}

func fieldNames[T any](s section[T]) []string {
	var out []string
	for _, f := range s.fields {
		out = append(out, f.name)
	}
	return out
}

// TestTeacherFileFromAVariable: a teacher block with a file and the fields
// of a teacher to train takes the file when it is not empty (resolved
// beside the recipe, the fields dropped) and trains the teacher when it is.
func TestTeacherFileFromAVariable(t *testing.T) {
	src := `variable "teacher" {
  default = ""
}
` + strings.Replace(base, "  optimizer", `  teacher {
    file   = var.teacher
    arch   = "mlp"
    hidden = [64]
    epochs = 2
  }
  distill {
  }
  optimizer`, 1)
	dir := t.TempDir()
	j, err := Parse([]byte(src), filepath.Join(dir, "r.hcl"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if j.Teacher.File != "" || j.Teacher.Model.Arch != "mlp" || j.Teacher.Epochs != 2 {
		t.Fatalf("empty file: teacher %+v", j.Teacher)
	}
	j, err = Parse([]byte(src), filepath.Join(dir, "r.hcl"), []string{`teacher=runs/dense/model.arrow`})
	if err != nil {
		t.Fatal(err)
	}
	if j.Teacher.File != filepath.Join(dir, "runs/dense/model.arrow") || j.Teacher.Model.Arch != "" || j.Teacher.Epochs != 0 {
		t.Fatalf("file: teacher %+v", j.Teacher)
	}
	if back, err := Parse(j.HCL(), filepath.Join(dir, "resolved.hcl"), nil); err != nil || !reflect.DeepEqual(back.Teacher, j.Teacher) {
		t.Fatalf("resolved recipe: %v, teacher %+v", err, back)
	}
}

var update = flag.Bool("update", false, "rewrite docs/recipes.md from the recipe tables")

// TestReferenceIsCurrent checks docs/recipes.md against the tables the
// decoder reads, and that it names every attribute of every block.
func TestReferenceIsCurrent(t *testing.T) {
	ref := Reference()
	path := filepath.Join("..", "docs", "recipes.md")
	if *update {
		if err := os.WriteFile(path, []byte(ref), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != ref {
		t.Fatal("docs/recipes.md is not what the recipe tables say: go test ./recipes -run Reference -update")
	}
	for _, f := range quantizeSection.fields {
		if f.doc == "" || !strings.Contains(ref, "| `"+f.name+"` |") {
			t.Fatalf("quantize.%s is undocumented", f.name)
		}
	}
	for _, want := range []string{"## `prune \"…\"`", "| `granularity` | string | `\"rows\"` | `rows`, `columns`, `filters`, `channels`, `groups`, `heads` |", "| `freeze_bn_epoch` | number | `0` | (0, epochs] |"} {
		if !strings.Contains(ref, want) {
			t.Fatalf("the reference lacks %q", want)
		}
	}
}
