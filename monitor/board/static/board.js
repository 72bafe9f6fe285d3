// the board's script: written by board-ui
