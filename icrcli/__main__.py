from icrcli.cli import main

main()
