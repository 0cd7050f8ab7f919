/* BrainMIA dashboard: live progress, and forms that post to the REST API and show its errors
   next to the field or manifest row they concern. No framework; the pages work as plain HTML
   and this script adds the live parts. */
(function () {
  "use strict";

  var FINAL = { succeeded: true, failed: true, cancelled: true };

  function $(root, selector) { return root.querySelector(selector); }
  function $all(root, selector) { return Array.prototype.slice.call(root.querySelectorAll(selector)); }

  function percent(value) { return Math.round(100 * (value || 0)) + "%"; }

  /* the page's CSRF token: every state-changing call made with the session cookie sends it */
  var csrfMeta = document.querySelector("meta[name=csrf-token]");
  var CSRF_TOKEN = csrfMeta ? csrfMeta.getAttribute("content") : "";
  function headers() { return { Accept: "application/json", "X-CSRF-Token": CSRF_TOKEN }; }

  /* ---------------------------------------------------------------- live progress */

  function updateJob(el, job) {
    var state = $(el, "[data-role=state]");
    if (state) {
      state.textContent = job.state;
      state.className = "state state-" + job.state;
    }
    var bar = $(el, "[data-role=progress]");
    if (bar) {
      bar.value = job.progress || 0;
      bar.textContent = percent(job.progress);
    }
    var stage = $(el, "[data-role=stage]");
    if (stage) { stage.textContent = percent(job.progress) + " \u00b7 " + (job.message || job.stage || ""); }
  }

  function poll(el) {
    var url = el.getAttribute("data-poll");
    var delay = 1000;
    function tick() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (response.status === 401) { window.location.href = "/sign-in?next=" + encodeURIComponent(window.location.pathname); return null; }
          return response.ok ? response.json() : null;
        })
        .then(function (job) {
          if (!job) { setTimeout(tick, 5000); return; }
          updateJob(el, job);
          if (FINAL[job.state]) {
            if (job.state === "succeeded") {
              var bar = $(el, "[data-role=progress]");
              if (bar) { bar.value = 1; }
            }
            // the server renders the finished row or the report
            setTimeout(function () { window.location.reload(); }, 400);
            return;
          }
          setTimeout(tick, delay);
        })
        .catch(function () { setTimeout(tick, 5000); });
    }
    setTimeout(tick, delay);
  }

  $all(document, "[data-poll]").forEach(poll);

  /* ---------------------------------------------------------------- API errors */

  function clearErrors(form) {
    $all(form, ".field-error[data-error-for]").forEach(function (p) { p.hidden = true; p.textContent = ""; });
    $all(form, "[aria-invalid]").forEach(function (input) { input.removeAttribute("aria-invalid"); });
    $all(form, ".has-error").forEach(function (f) { f.classList.remove("has-error"); });
    var summary = $(form, ".form-summary");
    if (summary) { summary.hidden = true; summary.textContent = ""; }
    var rows = $(form, ".row-errors");
    if (rows) { rows.hidden = true; $(rows, "tbody").innerHTML = ""; }
  }

  function fieldErrorSlot(form, field) {
    // the most specific slot: "options.policy.auc_high", then its parents ("metadata.input_shape.0" -> "metadata.input_shape")
    var parts = field.split(".");
    while (parts.length) {
      var name = parts.join(".");
      var slot = $all(form, ".field-error[data-error-for]").filter(function (p) { return p.getAttribute("data-error-for") === name; })[0];
      if (slot) { return slot; }
      parts.pop();
    }
    return null;
  }

  function showErrors(form, status, body) {
    var error = (body && body.error) || { message: "The server answered " + status + ".", details: [] };
    var summary = $(form, ".form-summary");
    var unplaced = [];
    var rows = $(form, ".row-errors");
    (error.details || []).forEach(function (d) {
      if (d.line !== null && d.line !== undefined && rows) {
        var tr = document.createElement("tr");
        [String(d.line), d.field || "", d.reason].forEach(function (text) {
          var td = document.createElement("td");
          td.textContent = text;
          tr.appendChild(td);
        });
        $(rows, "tbody").appendChild(tr);
        rows.hidden = false;
        return;
      }
      var slot = d.field ? fieldErrorSlot(form, d.field) : null;
      if (slot) {
        slot.textContent = (slot.textContent ? slot.textContent + " " : "") + d.reason;
        slot.hidden = false;
        var field = slot.closest(".field");
        if (field) {
          field.classList.add("has-error");
          var input = $(field, "input, select, textarea");
          if (input) {
            input.setAttribute("aria-invalid", "true");
            if (slot.id === "") { slot.id = "err-" + Math.random().toString(36).slice(2); }
            input.setAttribute("aria-describedby", ((input.getAttribute("aria-describedby") || "") + " " + slot.id).trim());
          }
        }
      } else {
        unplaced.push((d.field ? d.field + ": " : "") + d.reason);
      }
    });
    if (summary) {
      summary.textContent = "";
      var strong = document.createElement("strong");
      strong.textContent = error.message;
      summary.appendChild(strong);
      if (unplaced.length) {
        var ul = document.createElement("ul");
        unplaced.forEach(function (text) {
          var li = document.createElement("li");
          li.textContent = text;
          ul.appendChild(li);
        });
        summary.appendChild(ul);
      }
      summary.hidden = false;
      summary.setAttribute("tabindex", "-1");
      summary.focus();
    }
  }

  function send(form, method, url, body, contentType) {
    // XMLHttpRequest for upload progress on large archives
    return new Promise(function (resolve) {
      var xhr = new XMLHttpRequest();
      xhr.open(method, url);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.setRequestHeader("X-CSRF-Token", CSRF_TOKEN);
      if (contentType) { xhr.setRequestHeader("Content-Type", contentType); }
      var box = $(form, ".upload-progress");
      if (box && xhr.upload) {
        box.hidden = false;
        xhr.upload.onprogress = function (e) {
          if (e.lengthComputable) { $(box, "progress").value = e.loaded / e.total; }
        };
      }
      xhr.onload = function () {
        if (box) { box.hidden = true; }
        var parsed = null;
        try { parsed = JSON.parse(xhr.responseText); } catch (e) { parsed = null; }
        resolve({ status: xhr.status, body: parsed });
      };
      xhr.onerror = function () {
        if (box) { box.hidden = true; }
        resolve({ status: 0, body: { error: { message: "The server could not be reached.", details: [] } } });
      };
      xhr.send(body);
    });
  }

  function busy(form, on) {
    $all(form, "button[type=submit]").forEach(function (b) {
      b.disabled = on;
      if (on) { b.setAttribute("aria-busy", "true"); } else { b.removeAttribute("aria-busy"); }
    });
  }

  function wire(form, build, done) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      clearErrors(form);
      var request;
      try { request = build(form); } catch (problem) {
        showErrors(form, 422, { error: { message: problem.message, details: problem.details || [] } });
        return;
      }
      busy(form, true);
      send(form, request.method || "POST", form.getAttribute("data-api"), request.body, request.contentType)
        .then(function (result) {
          busy(form, false);
          if (result.status >= 200 && result.status < 300) { done(result.body); } else { showErrors(form, result.status, result.body); }
        });
    });
  }

  function reload() { window.location.reload(); }

  /* ---------------------------------------------------------------- model upload */

  function numberList(text, field, count, integer) {
    var parts = String(text).split(/[,x\u00d7\s]+/).filter(function (p) { return p !== ""; });
    var values = parts.map(Number);
    var ok = (values.length === count || (!integer && values.length === 1)) &&
      values.every(function (v) { return isFinite(v) && v > 0 && (!integer || Math.round(v) === v); });
    if (!ok) {
      var problem = new Error("Some fields need fixing.");
      problem.details = [{ field: field, reason: integer ? "three positive whole numbers, e.g. 91,109,91" : "one or three positive numbers, e.g. 2 or 2,2,2" }];
      throw problem;
    }
    return values.length === 1 ? [values[0], values[0], values[0]] : values;
  }

  var modelForm = document.getElementById("upload-model");
  if (modelForm) {
    var kindOf = function () { return $(modelForm, "input[name=kind]:checked").value; };
    var syncKind = function () {
      var federated = kindOf() === "federated_rounds";
      $all(modelForm, ".federated-only").forEach(function (el) { el.hidden = !federated; });
      var fromSidecars = federated && $(modelForm, "[name=use_sidecars]").checked;
      $all(modelForm, ".metadata .grid-3 input, .metadata .grid-3 select").forEach(function (el) { el.disabled = fromSidecars; });
    };
    $all(modelForm, "input[name=kind], input[name=use_sidecars]").forEach(function (el) { el.addEventListener("change", syncKind); });
    syncKind();
    wire(modelForm, function (form) {
      var data = new FormData();
      var file = $(form, "input[type=file]").files[0];
      if (!file) {
        var missing = new Error("Choose the model file.");
        missing.details = [{ field: "file", reason: "choose a file" }];
        throw missing;
      }
      data.append("file", file);
      data.append("kind", kindOf());
      var name = $(form, "[name=name]").value.trim();
      if (name) { data.append("name", name); }
      if (kindOf() === "federated_rounds" && $(form, "[name=use_sidecars]").checked) { return { body: data }; }
      var metadata = {
        input_shape: numberList($(form, "[name='metadata.input_shape']").value, "metadata.input_shape", 3, true),
        voxel_size: numberList($(form, "[name='metadata.voxel_size']").value, "metadata.voxel_size", 3, false),
        normalize: $(form, "[name='metadata.normalize']").value
      };
      var arch = $(form, "[name='metadata.arch']").value;
      if (arch) { metadata.arch = arch; }
      // JSON objects (arch_kwargs), or a name or JSON object (output "bins"/{...}, loss "soft_label_kl"/{...})
      ["arch_kwargs", "output", "loss"].forEach(function (key) {
        var text = $(form, "[name='metadata." + key + "']").value.trim();
        if (!text) { return; }
        if (key !== "arch_kwargs" && text.charAt(0) !== "{") { metadata[key] = text; return; }
        try { metadata[key] = JSON.parse(text); } catch (e) {
          var bad = new Error("Some fields need fixing.");
          bad.details = [{ field: "metadata." + key, reason: "not valid JSON: " + e.message }];
          throw bad;
        }
      });
      var dpEpsilon = $(form, "[name='metadata.dp.epsilon']").value.trim();
      if (dpEpsilon) {
        metadata.dp = { epsilon: Number(dpEpsilon) };
        var dpDelta = $(form, "[name='metadata.dp.delta']").value.trim();
        if (dpDelta) { metadata.dp.delta = Number(dpDelta); }
      }
      data.append("metadata", JSON.stringify(metadata));
      return { body: data };
    }, reload);
  }

  /* ---------------------------------------------------------------- scan sets */

  var archiveForm = document.getElementById("upload-archive");
  if (archiveForm) {
    wire(archiveForm, function (form) {
      var file = $(form, "input[type=file]").files[0];
      if (!file) {
        var missing = new Error("Choose the archive.");
        missing.details = [{ field: "archive", reason: "choose a .zip or .tar.gz file" }];
        throw missing;
      }
      var data = new FormData();
      data.append("archive", file);
      var name = $(form, "[name=name]").value.trim();
      if (name) { data.append("name", name); }
      return { body: data };
    }, reload);
  }

  var referenceForm = document.getElementById("upload-reference-set");
  if (referenceForm) {
    wire(referenceForm, function (form) {
      var problems = [];
      var file = $(form, "input[type=file]").files[0];
      if (!file) { problems.push({ field: "archive", reason: "choose a .zip or .tar.gz file with keep.csv and the models" }); }
      if (!$(form, "[name=scan_set_id]").value) { problems.push({ field: "scan_set_id", reason: "upload a scan set first" }); }
      var metadata = $(form, "[name=metadata]").value.trim();
      if (metadata) {
        try { JSON.parse(metadata); } catch (e) { problems.push({ field: "metadata", reason: "not valid JSON: " + e.message }); }
      }
      if (problems.length) {
        var problem = new Error("Some fields need fixing.");
        problem.details = problems;
        throw problem;
      }
      var data = new FormData();
      data.append("archive", file);
      data.append("scan_set_id", $(form, "[name=scan_set_id]").value);
      var name = $(form, "[name=name]").value.trim();
      if (name) { data.append("name", name); }
      if (metadata) { data.append("metadata", metadata); }
      return { body: data };
    }, reload);
  }

  var serverForm = document.getElementById("server-manifest");
  if (serverForm) {
    wire(serverForm, function (form) {
      var body = { manifest_path: $(form, "[name=manifest_path]").value.trim() };
      var name = $(form, "[name=name]").value.trim();
      if (name) { body.name = name; }
      return { body: JSON.stringify(body), contentType: "application/json" };
    }, reload);
  }

  var bidsForm = document.getElementById("server-bids");
  if (bidsForm) {
    wire(bidsForm, function (form) {
      var value = function (name) { return $(form, "[name=" + name + "]").value.trim(); };
      var body = { bids_path: value("bids_path") };
      ["members", "non_members"].forEach(function (key) {
        if (value(key + "_path")) { body[key + "_path"] = value(key + "_path"); }
        var ids = value(key).split(/\r?\n/).map(function (s) { return s.trim(); }).filter(function (s) { return s !== ""; });
        if (ids.length) { body[key] = ids; }
      });
      if (!body.members_path && !body.members) {
        var missing = new Error("Some fields need fixing.");
        missing.details = [{ field: "members", reason: "give the member list file or the member IDs" }];
        throw missing;
      }
      if (value("bids_filter")) { body.bids_filter = value("bids_filter"); }
      if (value("name")) { body.name = value("name"); }
      return { body: JSON.stringify(body), contentType: "application/json" };
    }, reload);
  }

  /* ---------------------------------------------------------------- new assessment */

  /* the reference-model choices: none, train K (with the model's recipe or one given as JSON), or a
     reference set of the chosen scan set; returns the request's options.reference (or null) */
  function referenceOptions(form, problems) {
    var checked = $(form, "input[name=reference_mode]:checked");
    var mode = checked ? checked.value : "none";
    if (mode === "train") {
      var input = $(form, "[name=reference_models]");
      var k = Number(input.value);
      if (!(Math.round(k) === k && k % 2 === 0 && k >= Number(input.min || 2) && k <= Number(input.max || 256))) {
        problems.push({ field: "options.reference.models", reason: "an even number from " + (input.min || 2) + " to " + (input.max || 256) });
      }
      var reference = { models: k };
      if ($(form, "input[name=recipe_source]:checked").value === "json") {
        var text = $(form, "[name=reference_recipe]").value.trim();
        try {
          reference.recipe = JSON.parse(text);
          if (!reference.recipe || typeof reference.recipe !== "object" || Array.isArray(reference.recipe)) { throw new Error("not a JSON object"); }
        } catch (e) {
          problems.push({ field: "options.reference.recipe", reason: text ? "not a JSON object: " + e.message : "give the recipe, or use the model's" });
        }
      }
      return reference;
    }
    if (mode === "supplied") {
      var select = $(form, "[name=reference_set_id]");
      var option = select.options[select.selectedIndex];
      if (!option || option.disabled) {
        problems.push({ field: "options.reference.reference_set_id", reason: "no reference set of this scan set: upload one on the Scan sets page" });
        return null;
      }
      return { reference_set_id: option.value };
    }
    return null;
  }

  function duration(seconds) {
    if (seconds < 90) { return Math.max(1, Math.round(seconds)) + " s"; }
    if (seconds < 5400) { return Math.round(seconds / 60) + " min"; }
    return (seconds / 3600).toFixed(1) + " h";
  }

  /* the training time of the trained references at this server's measured rate (per scan, epoch and
     input voxel of the model's grid); the job measures its own steps again before it trains */
  function showReferenceEstimate(form) {
    var box = document.getElementById("reference-estimate");
    if (!box) { return; }
    var base = box.getAttribute("data-base") || box.textContent;
    box.setAttribute("data-base", base);
    var rate = parseFloat(box.getAttribute("data-rate"));
    var model = $(form, "[name=model_id]"), scanSet = $(form, "[name=scan_set_id]");
    var m = model.options[model.selectedIndex], s = scanSet.options[scanSet.selectedIndex];
    var k = parseInt($(form, "[name=reference_models]").value, 10);
    var epochs = m ? m.getAttribute("data-epochs") : null;
    if ($(form, "input[name=recipe_source]:checked").value === "json") {
      try { epochs = JSON.parse($(form, "[name=reference_recipe]").value).epochs; } catch (e) { epochs = null; }
    }
    epochs = parseInt(epochs, 10);
    var voxels = m ? parseInt(m.getAttribute("data-voxels"), 10) : NaN;
    var half = s ? Math.max(1, Math.floor(parseInt(s.getAttribute("data-scans"), 10) / 2)) : NaN;
    if (!(rate > 0 && epochs > 0 && voxels > 0 && half > 0 && k > 0)) { box.textContent = base; return; }
    box.textContent = "Estimated training time: about " + duration(rate * k * epochs * half * voxels) +
      " on one worker (" + k + " models of " + epochs + " epochs on about " + half + " scans each, at the rate of the " +
      box.getAttribute("data-rate-models") + " reference models trained here last; less with several workers). " + base;
  }

  function wireReferenceChoices(form) {
    var modes = $all(form, "input[name=reference_mode]");
    if (!modes.length) { return; }
    var scanSet = $(form, "[name=scan_set_id]");
    var select = $(form, "[name=reference_set_id]");
    var sync = function () {
      var mode = $(form, "input[name=reference_mode]:checked").value;
      $all(form, ".reference-choice").forEach(function (box) { box.hidden = box.getAttribute("data-mode") !== mode; });
      // only the reference sets of the chosen scan set: their keep.csv names its scans
      var visible = 0;
      Array.prototype.forEach.call(select.options, function (option) {
        var mine = option.getAttribute("data-scan-set") === scanSet.value;
        option.hidden = !mine;
        option.disabled = !mine;
        visible += mine ? 1 : 0;
      });
      var current = select.options[select.selectedIndex];
      if (!current || current.disabled) {
        var first = Array.prototype.filter.call(select.options, function (o) { return !o.disabled; })[0];
        select.value = first ? first.value : "";
      }
      $(form, ".no-reference-sets").hidden = visible > 0;
      var recipe = $(form, "[name=reference_recipe]");
      recipe.disabled = $(form, "input[name=recipe_source]:checked").value !== "json";
      showReferenceEstimate(form);
    };
    modes.concat($all(form, "input[name=recipe_source]"), [scanSet, $(form, "[name=model_id]")]).forEach(function (el) { el.addEventListener("change", sync); });
    [$(form, "[name=reference_models]"), $(form, "[name=reference_recipe]")].forEach(function (el) {
      el.addEventListener("input", function () { showReferenceEstimate(form); });
    });
    sync();
  }

  var newForm = document.getElementById("new-assessment");
  if (newForm) {
    wireReferenceChoices(newForm);

    // a threat-model box ticks or clears its feature sets; it follows them when they change
    $all(newForm, "input.group-toggle").forEach(function (toggle) {
      var group = toggle.getAttribute("data-group");
      var members = $all(newForm, "input[name=feature_sets][data-group='" + group + "']");
      toggle.addEventListener("change", function () { members.forEach(function (m) { m.checked = toggle.checked; }); });
      members.forEach(function (m) {
        m.addEventListener("change", function () {
          var on = members.filter(function (x) { return x.checked; }).length;
          toggle.checked = on > 0;
          toggle.indeterminate = on > 0 && on < members.length;
        });
      });
    });

    wire(newForm, function (form) {
      var all = $all(form, "input[name=feature_sets]");
      var chosen = all.filter(function (i) { return i.checked; }).map(function (i) { return i.value; });
      var classifiers = $all(form, "input[name=classifiers]").filter(function (i) { return i.checked; }).map(function (i) { return i.value; });
      var problems = [];
      if (!$(form, "[name=model_id]").value) { problems.push({ field: "model_id", reason: "upload a model first" }); }
      if (!$(form, "[name=scan_set_id]").value) { problems.push({ field: "scan_set_id", reason: "upload a scan set first" }); }
      if (!chosen.length) { problems.push({ field: "options.feature_sets", reason: "tick at least one feature set" }); }
      if (!classifiers.length) { problems.push({ field: "options.classifiers", reason: "tick at least one classifier" }); }
      var reference = referenceOptions(form, problems);
      if (problems.length) {
        var problem = new Error("Some fields need fixing.");
        problem.details = problems;
        throw problem;
      }
      var options = {
        // every box ticked: the engine's default, every one of the paper's sets the model supports
        feature_sets: chosen.length === all.length ? null : chosen,
        classifiers: classifiers,
        repeats: Number($(form, "[name=repeats]").value || 5),
        policy: {
          auc_medium: Number($(form, "[name=auc_medium]").value),
          auc_high: Number($(form, "[name=auc_high]").value),
          tpr_at_1pct_fpr_medium: Number($(form, "[name=tpr_at_1pct_fpr_medium]").value),
          tpr_at_1pct_fpr_high: Number($(form, "[name=tpr_at_1pct_fpr_high]").value),
          fail_at: $(form, "[name=fail_at]").value,
          fail_on_error: $(form, "[name=fail_on_error]").checked,
          fail_on_inconclusive: $(form, "[name=fail_on_inconclusive]").checked
        },
        quantile: $(form, "[name=quantile]").checked,
        scan_qa: ($(form, "[name=scan_qa]:checked") || { value: "fail" }).value
      };
      if (reference) { options.reference = reference; }
      var trainSize = $(form, "[name=train_size]").value;
      if (trainSize) { options.train_size = Number(trainSize); }
      return {
        body: JSON.stringify({
          model_id: $(form, "[name=model_id]").value,
          scan_set_id: $(form, "[name=scan_set_id]").value,
          options: options
        }),
        contentType: "application/json"
      };
    }, function (job) { window.location.href = "/assessments/" + job.id; });
  }

  /* ---------------------------------------------------------------- delete */

  $all(document, "form[data-delete]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (!window.confirm("Delete " + form.getAttribute("data-what") + "? This cannot be undone.")) { return; }
      var message = $(form, ".delete-error");
      busy(form, true);
      fetch(form.getAttribute("data-delete"), { method: "DELETE", credentials: "same-origin", headers: headers() })
        .then(function (response) {
          if (response.ok) { window.location.href = form.getAttribute("data-after"); return null; }
          return response.json().then(function (body) {
            busy(form, false);
            message.textContent = (body && body.error && body.error.message) || ("The server answered " + response.status + ".");
            message.hidden = false;
          });
        })
        .catch(function () {
          busy(form, false);
          message.textContent = "The server could not be reached.";
          message.hidden = false;
        });
    });
  });

  /* ---------------------------------------------------------------- cancel */

  var cancelForm = document.getElementById("cancel-form");
  if (cancelForm) {
    cancelForm.addEventListener("submit", function (event) {
      event.preventDefault();
      if (!window.confirm("Cancel this assessment?")) { return; }
      fetch(cancelForm.getAttribute("data-api"), { method: "POST", credentials: "same-origin", headers: headers() }).then(reload, reload);
    });
  }
})();
