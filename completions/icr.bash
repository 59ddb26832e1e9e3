# bash completion for icr. Generated from the CLI by `python dev/docgen.py`: do not edit.
# Install: source this file from ~/.bashrc, or copy it to ~/.local/share/bash-completion/completions/icr

_icr() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="" path="icr" w i skip=0
    COMPREPLY=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${COMP_WORDS[i]}"
        if ((skip)); then skip=0; continue; fi
        case "$path $w" in
            "icr cache"|"icr demo"|"icr extract"|"icr info"|"icr layers"|"icr memorization"|"icr merge"|"icr plot"|"icr probe"|"icr score"|"icr sweep"|"icr timeline"|"icr cache clear"|"icr cache info"|"icr cache path") path="$path $w" ;;
            "icr cache clear --older-than"|"icr cache clear --kind"|"icr demo -o"|"icr demo --output"|"icr demo --device"|"icr extract --data"|"icr extract --sigma"|"icr extract -o"|"icr extract --output"|"icr extract --shard"|"icr extract --arch"|"icr extract --arch-arg"|"icr extract --key"|"icr extract --param"|"icr extract --schedule"|"icr extract --time-input"|"icr extract --time-shape"|"icr extract --time-convention"|"icr extract --data-range"|"icr extract --prediction"|"icr extract --call"|"icr extract --class-label"|"icr extract --vae"|"icr extract --image-shape"|"icr extract --layer"|"icr extract --views"|"icr extract --images"|"icr extract --augment"|"icr extract --indices"|"icr extract --seed"|"icr extract --dtype"|"icr extract --pool"|"icr extract --chunk-images"|"icr extract --t-mode"|"icr extract --batch-size"|"icr extract --device"|"icr layers --depth"|"icr layers --arch"|"icr layers --arch-arg"|"icr layers --key"|"icr layers --param"|"icr layers --schedule"|"icr layers --time-input"|"icr layers --time-shape"|"icr layers --time-convention"|"icr layers --data-range"|"icr layers --prediction"|"icr layers --call"|"icr layers --class-label"|"icr layers --vae"|"icr layers --image-shape"|"icr memorization --data"|"icr memorization --samples"|"icr memorization --steps"|"icr memorization --seed"|"icr memorization --criterion"|"icr memorization --threshold"|"icr memorization --embed"|"icr memorization --embed-layer"|"icr memorization --embed-sigma"|"icr memorization --batch-size"|"icr memorization --device"|"icr memorization --grid"|"icr memorization --grid-count"|"icr memorization -o"|"icr memorization --output"|"icr memorization --arch"|"icr memorization --arch-arg"|"icr memorization --key"|"icr memorization --param"|"icr memorization --schedule"|"icr memorization --time-input"|"icr memorization --time-shape"|"icr memorization --time-convention"|"icr memorization --data-range"|"icr memorization --prediction"|"icr memorization --call"|"icr memorization --class-label"|"icr memorization --vae"|"icr memorization --image-shape"|"icr merge -o"|"icr merge --output"|"icr merge --estimator"|"icr merge --tau"|"icr merge --tau-rel"|"icr merge --ci-groups"|"icr merge --confidence"|"icr plot -o"|"icr plot --output"|"icr probe --test"|"icr probe --split"|"icr probe --seed"|"icr probe --l2"|"icr probe --knn"|"icr probe --protocol"|"icr probe --folds"|"icr probe --layer"|"icr probe -o"|"icr probe --output"|"icr score --dataset"|"icr score --layer"|"icr score --estimator"|"icr score --tau"|"icr score --tau-rel"|"icr score --ci-groups"|"icr score --confidence"|"icr score --block-images"|"icr score --directions"|"icr score --top"|"icr score --stats-out"|"icr score -o"|"icr score --output"|"icr score --options"|"icr sweep --data"|"icr sweep --sigmas"|"icr sweep -o"|"icr sweep --output"|"icr sweep --csv"|"icr sweep --plot"|"icr sweep --summary"|"icr sweep --probe-first"|"icr sweep --probe-train"|"icr sweep --probe-test"|"icr sweep --shard"|"icr sweep --shards"|"icr sweep --arch"|"icr sweep --arch-arg"|"icr sweep --key"|"icr sweep --param"|"icr sweep --schedule"|"icr sweep --time-input"|"icr sweep --time-shape"|"icr sweep --time-convention"|"icr sweep --data-range"|"icr sweep --prediction"|"icr sweep --call"|"icr sweep --class-label"|"icr sweep --vae"|"icr sweep --image-shape"|"icr sweep --layer"|"icr sweep --views"|"icr sweep --images"|"icr sweep --augment"|"icr sweep --indices"|"icr sweep --seed"|"icr sweep --dtype"|"icr sweep --pool"|"icr sweep --chunk-images"|"icr sweep --t-mode"|"icr sweep --batch-size"|"icr sweep --device"|"icr sweep --estimator"|"icr sweep --tau"|"icr sweep --tau-rel"|"icr sweep --ci-groups"|"icr sweep --confidence"|"icr sweep --probe-split"|"icr sweep --knn"|"icr sweep --probe-protocol"|"icr sweep --probe-folds"|"icr sweep --probe-test-data"|"icr sweep --options"|"icr timeline --data"|"icr timeline --sigma"|"icr timeline --pattern"|"icr timeline --poll"|"icr timeline --until"|"icr timeline --idle"|"icr timeline --retry-for"|"icr timeline --fail-on-rise"|"icr timeline --fail-above"|"icr timeline -o"|"icr timeline --output"|"icr timeline --csv"|"icr timeline --plot"|"icr timeline --summary"|"icr timeline --memorization"|"icr timeline --shard"|"icr timeline --arch"|"icr timeline --arch-arg"|"icr timeline --key"|"icr timeline --param"|"icr timeline --schedule"|"icr timeline --time-input"|"icr timeline --time-shape"|"icr timeline --time-convention"|"icr timeline --data-range"|"icr timeline --prediction"|"icr timeline --call"|"icr timeline --class-label"|"icr timeline --vae"|"icr timeline --image-shape"|"icr timeline --layer"|"icr timeline --views"|"icr timeline --images"|"icr timeline --augment"|"icr timeline --indices"|"icr timeline --seed"|"icr timeline --dtype"|"icr timeline --pool"|"icr timeline --chunk-images"|"icr timeline --t-mode"|"icr timeline --batch-size"|"icr timeline --device"|"icr timeline --estimator"|"icr timeline --tau"|"icr timeline --tau-rel"|"icr timeline --ci-groups"|"icr timeline --confidence"|"icr timeline --options") skip=1 ;;
        esac
    done
    if ((skip)); then
        prev="${COMP_WORDS[COMP_CWORD-1]}"
        case "$path $prev" in
            "icr cache clear --kind") mapfile -t COMPREPLY < <(compgen -W "features scores sweeps timeline-points samples hashes" -- "$cur") ;;
            "icr demo -o"|"icr demo --output") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr demo --device") mapfile -t COMPREPLY < <(compgen -W "auto cpu cuda" -- "$cur") ;;
            "icr extract --data") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr extract -o"|"icr extract --output") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr extract --arch") mapfile -t COMPREPLY < <(compgen -W "edm dit sit repa" -- "$cur") ;;
            "icr extract --param") mapfile -t COMPREPLY < <(compgen -W "edm ve vp ddpm flow" -- "$cur") ;;
            "icr extract --time-convention") mapfile -t COMPREPLY < <(compgen -W "repa sit" -- "$cur") ;;
            "icr extract --vae") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr extract --augment") mapfile -t COMPREPLY < <(compgen -W "paper crop crop-flip simclr digits none" -- "$cur") ;;
            "icr extract --indices") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr extract --dtype") mapfile -t COMPREPLY < <(compgen -W "float32 bfloat16 float16" -- "$cur") ;;
            "icr extract --pool") mapfile -t COMPREPLY < <(compgen -W "mean none" -- "$cur") ;;
            "icr extract --t-mode") mapfile -t COMPREPLY < <(compgen -W "nearest interp" -- "$cur") ;;
            "icr extract --device") mapfile -t COMPREPLY < <(compgen -W "auto cpu cuda" -- "$cur") ;;
            "icr layers --arch") mapfile -t COMPREPLY < <(compgen -W "edm dit sit repa" -- "$cur") ;;
            "icr layers --param") mapfile -t COMPREPLY < <(compgen -W "edm ve vp ddpm flow" -- "$cur") ;;
            "icr layers --time-convention") mapfile -t COMPREPLY < <(compgen -W "repa sit" -- "$cur") ;;
            "icr layers --vae") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr memorization --data") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr memorization --criterion") mapfile -t COMPREPLY < <(compgen -W "ratio cosine" -- "$cur") ;;
            "icr memorization --embed") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr memorization --device") mapfile -t COMPREPLY < <(compgen -W "auto cpu cuda" -- "$cur") ;;
            "icr memorization --grid") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr memorization -o"|"icr memorization --output") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr memorization --arch") mapfile -t COMPREPLY < <(compgen -W "edm dit sit repa" -- "$cur") ;;
            "icr memorization --param") mapfile -t COMPREPLY < <(compgen -W "edm ve vp ddpm flow" -- "$cur") ;;
            "icr memorization --time-convention") mapfile -t COMPREPLY < <(compgen -W "repa sit" -- "$cur") ;;
            "icr memorization --vae") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr merge -o"|"icr merge --output") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr merge --estimator") mapfile -t COMPREPLY < <(compgen -W "paper plugin" -- "$cur") ;;
            "icr plot -o"|"icr plot --output") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr probe --test") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr probe --protocol") mapfile -t COMPREPLY < <(compgen -W "paper view-mean" -- "$cur") ;;
            "icr probe -o"|"icr probe --output") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr score --estimator") mapfile -t COMPREPLY < <(compgen -W "paper plugin" -- "$cur") ;;
            "icr score --directions") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr score --stats-out") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr score -o"|"icr score --output") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr score --options") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr sweep --data") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr sweep -o"|"icr sweep --output") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr sweep --csv") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr sweep --plot") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr sweep --summary") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr sweep --probe-train") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr sweep --probe-test") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr sweep --arch") mapfile -t COMPREPLY < <(compgen -W "edm dit sit repa" -- "$cur") ;;
            "icr sweep --param") mapfile -t COMPREPLY < <(compgen -W "edm ve vp ddpm flow" -- "$cur") ;;
            "icr sweep --time-convention") mapfile -t COMPREPLY < <(compgen -W "repa sit" -- "$cur") ;;
            "icr sweep --vae") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr sweep --augment") mapfile -t COMPREPLY < <(compgen -W "paper crop crop-flip simclr digits none" -- "$cur") ;;
            "icr sweep --indices") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr sweep --dtype") mapfile -t COMPREPLY < <(compgen -W "float32 bfloat16 float16" -- "$cur") ;;
            "icr sweep --pool") mapfile -t COMPREPLY < <(compgen -W "mean none" -- "$cur") ;;
            "icr sweep --t-mode") mapfile -t COMPREPLY < <(compgen -W "nearest interp" -- "$cur") ;;
            "icr sweep --device") mapfile -t COMPREPLY < <(compgen -W "auto cpu cuda" -- "$cur") ;;
            "icr sweep --estimator") mapfile -t COMPREPLY < <(compgen -W "paper plugin" -- "$cur") ;;
            "icr sweep --probe-protocol") mapfile -t COMPREPLY < <(compgen -W "paper view-mean" -- "$cur") ;;
            "icr sweep --probe-test-data") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr sweep --options") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr timeline --data") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr timeline -o"|"icr timeline --output") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr timeline --csv") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr timeline --plot") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr timeline --summary") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr timeline --arch") mapfile -t COMPREPLY < <(compgen -W "edm dit sit repa" -- "$cur") ;;
            "icr timeline --param") mapfile -t COMPREPLY < <(compgen -W "edm ve vp ddpm flow" -- "$cur") ;;
            "icr timeline --time-convention") mapfile -t COMPREPLY < <(compgen -W "repa sit" -- "$cur") ;;
            "icr timeline --vae") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr timeline --augment") mapfile -t COMPREPLY < <(compgen -W "paper crop crop-flip simclr digits none" -- "$cur") ;;
            "icr timeline --indices") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
            "icr timeline --dtype") mapfile -t COMPREPLY < <(compgen -W "float32 bfloat16 float16" -- "$cur") ;;
            "icr timeline --pool") mapfile -t COMPREPLY < <(compgen -W "mean none" -- "$cur") ;;
            "icr timeline --t-mode") mapfile -t COMPREPLY < <(compgen -W "nearest interp" -- "$cur") ;;
            "icr timeline --device") mapfile -t COMPREPLY < <(compgen -W "auto cpu cuda" -- "$cur") ;;
            "icr timeline --estimator") mapfile -t COMPREPLY < <(compgen -W "paper plugin" -- "$cur") ;;
            "icr timeline --options") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
        esac
        return 0
    fi
    if [[ $cur == -* ]]; then
        case "$path" in
            "icr") mapfile -t COMPREPLY < <(compgen -W "--version --install-completion --show-completion -h --help" -- "$cur") ;;
            "icr cache") mapfile -t COMPREPLY < <(compgen -W "-h --help" -- "$cur") ;;
            "icr cache clear") mapfile -t COMPREPLY < <(compgen -W "--older-than --kind --dry-run --json --quiet -q --debug -h --help" -- "$cur") ;;
            "icr cache info") mapfile -t COMPREPLY < <(compgen -W "--json --debug -h --help" -- "$cur") ;;
            "icr cache path") mapfile -t COMPREPLY < <(compgen -W "--debug -h --help" -- "$cur") ;;
            "icr demo") mapfile -t COMPREPLY < <(compgen -W "-o --output --quick --device --quiet -q --debug -h --help" -- "$cur") ;;
            "icr extract") mapfile -t COMPREPLY < <(compgen -W "--data --sigma --overwrite -o --output --shard --quiet -q --debug --no-cache --arch --arch-arg --key --trust-pickle --param --schedule --time-input --time-shape --time-convention --data-range --prediction --call --class-label --vae --image-shape --layer --views --images --augment --indices --seed --dtype --pool --resize --chunk-images --t-mode --skip-bad-images --batch-size --device -h --help" -- "$cur") ;;
            "icr info") mapfile -t COMPREPLY < <(compgen -W "--json --debug -h --help" -- "$cur") ;;
            "icr layers") mapfile -t COMPREPLY < <(compgen -W "--depth --json --debug --arch --arch-arg --key --trust-pickle --param --schedule --time-input --time-shape --time-convention --data-range --prediction --call --class-label --vae --image-shape -h --help" -- "$cur") ;;
            "icr memorization") mapfile -t COMPREPLY < <(compgen -W "--data --samples --steps --seed --criterion --threshold --embed --embed-layer --embed-sigma --batch-size --device --grid --grid-count -o --output --quiet -q --debug --no-cache --arch --arch-arg --key --trust-pickle --param --schedule --time-input --time-shape --time-convention --data-range --prediction --call --class-label --vae --image-shape -h --help" -- "$cur") ;;
            "icr merge") mapfile -t COMPREPLY < <(compgen -W "--no-cache -o --output --quiet -q --debug --estimator --tau --tau-rel --ci --ci-groups --confidence -h --help" -- "$cur") ;;
            "icr plot") mapfile -t COMPREPLY < <(compgen -W "-o --output --quiet -q --debug -h --help" -- "$cur") ;;
            "icr probe") mapfile -t COMPREPLY < <(compgen -W "--test --split --seed --l2 --knn --protocol --folds --layer -o --output --quiet -q --debug -h --help" -- "$cur") ;;
            "icr score") mapfile -t COMPREPLY < <(compgen -W "--dataset --layer --estimator --tau --tau-rel --ci --ci-groups --confidence --skip-nonfinite --allow-partial --block-images --directions --top --stats-out --follow-external --no-cache -o --output --quiet -q --debug --options -h --help" -- "$cur") ;;
            "icr sweep") mapfile -t COMPREPLY < <(compgen -W "--data --sigmas -o --output --json-lines --csv --plot --summary --probe --probe-first --probe-train --probe-test --shard --shards --quiet -q --debug --no-cache --arch --arch-arg --key --trust-pickle --param --schedule --time-input --time-shape --time-convention --data-range --prediction --call --class-label --vae --image-shape --layer --views --images --augment --indices --seed --dtype --pool --resize --chunk-images --t-mode --skip-bad-images --batch-size --device --estimator --tau --tau-rel --ci --ci-groups --confidence --probe-split --knn --probe-protocol --probe-folds --probe-test-data --options -h --help" -- "$cur") ;;
            "icr timeline") mapfile -t COMPREPLY < <(compgen -W "--data --sigma --pattern --watch --poll --until --idle --retry-for --fail-on-rise --fail-above --point-estimates --fail-fast -o --output --json-lines --csv --plot --summary --probe --memorization --shard --quiet -q --debug --no-cache --arch --arch-arg --key --trust-pickle --param --schedule --time-input --time-shape --time-convention --data-range --prediction --call --class-label --vae --image-shape --layer --views --images --augment --indices --seed --dtype --pool --resize --chunk-images --t-mode --skip-bad-images --batch-size --device --estimator --tau --tau-rel --ci --ci-groups --confidence --options -h --help" -- "$cur") ;;
        esac
        return 0
    fi
    case "$path" in
        "icr") mapfile -t COMPREPLY < <(compgen -W "cache demo extract info layers memorization merge plot probe score sweep timeline" -- "$cur") ;;
        "icr cache") mapfile -t COMPREPLY < <(compgen -W "clear info path" -- "$cur") ;;
        "icr extract"|"icr info"|"icr layers"|"icr memorization"|"icr merge"|"icr plot"|"icr probe"|"icr score"|"icr sweep"|"icr timeline") compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
    esac
}
complete -F _icr icr
